"""Knowledge graph of <head, relation, tail> triples and the knowledge prompt built from it.

MedKit's knowledge injection (Su et al., "MedKit: Multi-level feature distillation with knowledge
injection for radiology report generation", Expert Systems with Applications 296, 129003, 2026):
the diseases predicted for an image query a knowledge graph of triples such as
``<Pleural Effusion, located at, costophrenic angle>`` and a prompt template
("Disease symptoms: {heads}. Image representation: {tails}. ...") turns the retrieved triples into
the text prompt that is embedded and fused with the image embedding.

The class knows nothing about chest X-rays: the packaged ``data/knowledge_cxr.json`` holds the
14 CheXpert observations, and a CT graph with the same schema loads the same way.

File schema (JSON)::

    {"name": str, "version": str, "description": str, "source_note": str,
     "normal_node": str (optional: the node whose triples describe a normal study),
     "nodes": [{"id": str, "type": str}, ...],
     "edges": [{"head": str, "relation": str, "tail": str}, ...]}

networkx node-link JSON (``nodes`` + ``links``/``edges`` with ``source``/``target``) and GraphML
(node attribute ``type``, edge attribute ``relation``) load too.

Example::

    python -c "from medkit.core.knowledge import KnowledgeGraph, build_prompt; \
kg = KnowledgeGraph.load(); f = ['Pleural Effusion', 'Cardiomegaly']; \
print(build_prompt(f, kg.query(f, max_per_finding=3)))"
"""

from __future__ import annotations

import importlib.resources
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

logger = logging.getLogger(__name__)

#: Packaged graph loaded by ``KnowledgeGraph.load()`` without a path.
DEFAULT_GRAPH = "knowledge_cxr.json"

#: Node types a graph file may use.
NODE_TYPES = ("observation", "sign", "location", "anatomy", "related_finding", "measurement")

#: Edge relations a graph file may use, each with the label it gets in the prompt. The order
#: here is the order of the groups in the prompt.
RELATION_LABELS: dict[str, str] = {
    "image representation": "Image representation",
    "located at": "Location",
    "measured by": "Measurement",
    "associated with": "Associated with",
    "suggests": "Suggests",
    "differential": "Differential",
    "synonym of": "Also called",
}
RELATIONS = tuple(RELATION_LABELS)

_META_KEYS = ("name", "version", "description", "source_note", "normal_node")


@dataclass(frozen=True)
class Triple:
    """One ``<head, relation, tail>`` fact of the knowledge graph."""

    head: str
    relation: str
    tail: str

    def __str__(self) -> str:
        return f"<{self.head}, {self.relation}, {self.tail}>"


def packaged_graph_path(filename: str = DEFAULT_GRAPH):
    """Return the packaged graph file ``medkit/data/<filename>`` (an importlib Traversable)."""
    return importlib.resources.files("medkit").joinpath("data", filename)


class KnowledgeGraph:
    """A typed knowledge graph held as a ``networkx.MultiDiGraph``.

    Nodes carry ``type`` (one of ``NODE_TYPES``); edges carry ``relation`` (one of ``RELATIONS``)
    and use the relation as their key, so one head-tail pair can hold several relations but not
    the same one twice. ``graph.graph`` holds the file's metadata (name, version, description,
    source_note, normal_node). The out-edges of each node keep file order, which is the
    order ``query`` returns.
    """

    def __init__(self, graph: nx.MultiDiGraph | None = None) -> None:
        self.graph = graph if graph is not None else nx.MultiDiGraph()

    # ------------------------------------------------------------------ building
    def add_node(self, name: str, type: str) -> None:
        """Add a node of a known type; re-adding with the same type is a no-op."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"node name must be a non-empty string, got {name!r}")
        if type not in NODE_TYPES:
            raise ValueError(f"node {name!r} has type {type!r}; expected one of {NODE_TYPES}")
        old = self.graph.nodes[name].get("type") if name in self.graph else None
        if old is not None and old != type:
            raise ValueError(f"node {name!r} declared twice, as {old!r} and as {type!r}")
        self.graph.add_node(name, type=type)

    def add_triple(self, head: str, relation: str, tail: str) -> None:
        """Add an edge between two existing nodes; a repeated triple is ignored."""
        for name in (head, tail):
            if name not in self.graph:
                raise ValueError(f"edge <{head}, {relation}, {tail}> uses undeclared node {name!r}")
        if relation not in RELATION_LABELS:
            raise ValueError(
                f"edge <{head}, {relation}, {tail}> has relation {relation!r}; expected one of {RELATIONS}"
            )
        if self.graph.has_edge(head, tail, key=relation):
            logger.debug("duplicate triple <%s, %s, %s> ignored", head, relation, tail)
            return
        self.graph.add_edge(head, tail, key=relation, relation=relation)

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def load(cls, path: str | Path | None = None, packaged: str = DEFAULT_GRAPH) -> KnowledgeGraph:
        """Load a graph file: ``None`` gives the packaged graph ``packaged`` (``medkit/data/``;
        ``knowledge_cxr.json`` by default, ``knowledge_ct.json`` for the CT path).

        ``*.json`` in MedKit's schema (see module docstring) or networkx node-link JSON, or
        ``*.graphml``. Raises ``ValueError`` naming the file when it is missing, has an unknown
        suffix or its content does not fit.
        """
        if path is None:
            resource = packaged_graph_path(packaged)
            source = f"packaged medkit/data/{packaged}"
            try:
                text = resource.read_text(encoding="utf-8")
            except (FileNotFoundError, OSError) as exc:
                raise ValueError(f"cannot read {source}: {exc}") from exc
            return cls._from_json_text(text, source)

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".graphml"):
            raise ValueError(f"knowledge graph file {path} has suffix {path.suffix!r}; expected .json or .graphml")
        if not path.is_file():
            raise ValueError(f"knowledge graph file {path} does not exist")
        if suffix == ".json":
            return cls._from_json_text(path.read_text(encoding="utf-8"), str(path))
        return cls._from_graphml(path)

    @classmethod
    def _from_json_text(cls, text: str, source: str) -> KnowledgeGraph:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"knowledge graph file {source} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
            raise ValueError(f"knowledge graph file {source} needs an object with a 'nodes' list")

        kg = cls()
        links = data.get("links")
        edges = data.get("edges")
        # node-link JSON (networkx.node_link_data): edges under "links" (or "edges" since
        # networkx 3.4) with "source"/"target"; metadata under "graph".
        node_link = links is not None or (
            isinstance(edges, list) and bool(edges) and isinstance(edges[0], dict) and "source" in edges[0]
        )
        meta = data.get("graph", {}) if node_link else data
        if isinstance(meta, dict):
            kg.graph.graph.update({k: meta[k] for k in _META_KEYS if isinstance(meta.get(k), str)})
        edge_list = links if links is not None else edges
        if not isinstance(edge_list, list):
            raise ValueError(f"knowledge graph file {source} needs an 'edges' list")
        head_key, tail_key = ("source", "target") if node_link else ("head", "tail")

        try:
            for i, node in enumerate(data["nodes"]):
                if not isinstance(node, dict) or "id" not in node or "type" not in node:
                    raise ValueError(f"node #{i} {node!r} needs 'id' and 'type'")
                kg.add_node(node["id"], node["type"])
            for i, edge in enumerate(edge_list):
                if not isinstance(edge, dict) or not {head_key, tail_key, "relation"} <= edge.keys():
                    raise ValueError(f"edge #{i} {edge!r} needs '{head_key}', 'relation' and '{tail_key}'")
                kg.add_triple(edge[head_key], edge["relation"], edge[tail_key])
        except ValueError as exc:
            raise ValueError(f"knowledge graph file {source}: {exc}") from exc
        kg._check_normal_node(source)
        return kg

    @classmethod
    def _from_graphml(cls, path: Path) -> KnowledgeGraph:
        try:
            g = nx.read_graphml(path, force_multigraph=True)
        except Exception as exc:  # networkx raises ElementTree / NetworkXError / KeyError variants
            raise ValueError(f"knowledge graph file {path} is not readable GraphML: {exc}") from exc
        kg = cls()
        kg.graph.graph.update({k: v for k, v in g.graph.items() if k in _META_KEYS and isinstance(v, str)})
        try:
            for name, attrs in g.nodes(data=True):
                if "type" not in attrs:
                    raise ValueError(f"node {name!r} has no 'type' attribute")
                kg.add_node(name, attrs["type"])
            for head, tail, attrs in g.edges(data=True):
                if "relation" not in attrs:
                    raise ValueError(f"edge {head!r} -> {tail!r} has no 'relation' attribute")
                kg.add_triple(head, attrs["relation"], tail)
        except ValueError as exc:
            raise ValueError(f"knowledge graph file {path}: {exc}") from exc
        kg._check_normal_node(str(path))
        return kg

    def _check_normal_node(self, source: str) -> None:
        normal = self.graph.graph.get("normal_node")
        if normal is not None and normal not in self.graph:
            raise ValueError(f"knowledge graph file {source}: normal_node {normal!r} is not a node")

    def save(self, path: str | Path) -> None:
        """Write the graph as MedKit JSON (``*.json``) or GraphML (``*.graphml``)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            path.write_text(self.to_json(), encoding="utf-8")
        elif suffix == ".graphml":
            g = nx.MultiDiGraph()
            g.graph.update({k: v for k, v in self.graph.graph.items() if k in _META_KEYS and v is not None})
            g.add_nodes_from((n, {"type": t}) for n, t in self.graph.nodes(data="type"))
            g.add_edges_from((t.head, t.tail, t.relation, {"relation": t.relation}) for t in self.triples())
            nx.write_graphml(g, path)
        else:
            raise ValueError(f"cannot save knowledge graph to {path}: suffix {path.suffix!r} is not .json or .graphml")

    def to_json(self) -> str:
        """The graph as MedKit JSON text, one node or edge per line (diff-friendly)."""
        lines = ["{"]
        for key in _META_KEYS:
            if self.graph.graph.get(key) is not None:
                lines.append(f"  {json.dumps(key)}: {json.dumps(self.graph.graph[key], ensure_ascii=False)},")
        nodes = [json.dumps({"id": n, "type": t}, ensure_ascii=False) for n, t in self.graph.nodes(data="type")]
        edges = [
            json.dumps({"head": t.head, "relation": t.relation, "tail": t.tail}, ensure_ascii=False)
            for t in self.triples()
        ]
        lines += ['  "nodes": [', ",\n".join("    " + n for n in nodes), "  ],"]
        lines += ['  "edges": [', ",\n".join("    " + e for e in edges), "  ]", "}"]
        return "\n".join(line for line in lines if line) + "\n"

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self.graph.number_of_edges()

    def triples(self) -> Iterator[Triple]:
        """All triples, grouped by head in node order, each head's in file order."""
        for head, tail, relation in self.graph.edges(data="relation"):
            yield Triple(head, relation, tail)

    def observations(self) -> list[str]:
        """Names of the nodes of type ``observation``, in file order."""
        return [n for n, t in self.graph.nodes(data="type") if t == "observation"]

    def find(self, name: str) -> str | None:
        """The node called ``name`` ignoring case and surrounding spaces, or None."""
        return self._name_index().get(name.strip().casefold())

    def _name_index(self) -> dict[str, str]:
        # rebuilt per call: graphs are small (~100s of nodes) and callers may edit self.graph
        return {n.casefold(): n for n in self.graph.nodes}

    def prompt_for(self, findings: Sequence[str], max_per_finding: int) -> tuple[str, list[Triple]]:
        """(knowledge prompt, triples) for the positive findings; none -> the graph's normal node."""
        heads = list(findings) or [self.graph.graph.get("normal_node")]
        triples = self.query([h for h in heads if h], max_per_finding=max_per_finding)
        return build_prompt(findings, triples), triples

    def query(
        self,
        findings: Iterable[str],
        relations: Sequence[str] | None = None,
        max_per_finding: int = 4,
    ) -> list[Triple]:
        """Triples whose head is one of ``findings``.

        Findings match node names ignoring case; unknown findings are skipped (logged at debug
        level) and repeated ones count once. The result follows the order of ``findings``, and
        for each finding the file order of its triples, keeping at most ``max_per_finding`` of
        them. ``relations`` keeps only those relations (None: all).
        """
        if isinstance(findings, str):
            raise ValueError(f"findings must be a list of names, got the string {findings!r}")
        if max_per_finding < 1:
            raise ValueError(f"max_per_finding must be >= 1, got {max_per_finding}")
        if relations is not None:
            unknown = [r for r in relations if r not in RELATION_LABELS]
            if unknown:
                raise ValueError(f"unknown relations {unknown}; expected some of {RELATIONS}")
            wanted = set(relations)
        index = self._name_index()
        out: list[Triple] = []
        seen_heads: set[str] = set()
        for finding in findings:
            head = index.get(str(finding).strip().casefold())
            if head is None:
                logger.debug("finding %r is not in the knowledge graph", finding)
                continue
            if head in seen_heads:
                continue
            seen_heads.add(head)
            kept = 0
            for _, tail, relation in self.graph.out_edges(head, data="relation"):
                if relations is not None and relation not in wanted:
                    continue
                out.append(Triple(head, relation, tail))
                kept += 1
                if kept == max_per_finding:
                    break
        return out

    def prompt(
        self,
        findings: Sequence[str],
        relations: Sequence[str] | None = None,
        max_per_finding: int = 3,
    ) -> str:
        """``build_prompt`` for ``findings``; with no findings, from the graph's normal node."""
        findings = list(findings)
        heads = findings
        if not findings and self.graph.graph.get("normal_node"):
            heads = [self.graph.graph["normal_node"]]
        return build_prompt(findings, self.query(heads, relations, max_per_finding))


def build_prompt(findings: Sequence[str], triples: Sequence[Triple]) -> str:
    """The MedKit knowledge prompt: ``Disease symptoms: {heads}. {Relation label}: {tails}. ...``.

    Lower-case; findings joined by ", " (repeats dropped, "none" when empty); the tails of
    ``triples`` grouped by relation in ``RELATION_LABELS`` order (unknown relations after, by
    first use), joined by "; " within a group, each tail once. With no findings, pass the normal
    node's triples (``KnowledgeGraph.prompt`` does) to get e.g.
    ``Disease symptoms: none. Image representation: clear lungs; normal heart size.``
    """
    if isinstance(findings, str):
        raise ValueError(f"findings must be a list of names, got the string {findings!r}")
    heads = list(dict.fromkeys(f.strip().lower() for f in findings if f.strip()))
    parts = [f"Disease symptoms: {', '.join(heads) if heads else 'none'}."]
    groups: dict[str, list[str]] = {r: [] for r in RELATION_LABELS}
    for t in triples:
        tails = groups.setdefault(t.relation, [])
        tail = t.tail.strip().lower()
        if tail not in tails:
            tails.append(tail)
    for relation, tails in groups.items():
        if tails:
            label = RELATION_LABELS.get(relation, relation.capitalize())
            parts.append(f"{label}: {'; '.join(tails)}.")
    return " ".join(parts)
