"""Tests for medkit.core.knowledge: the packaged CXR graph, query, prompt and file round trips."""

import itertools
import json
import re

import networkx as nx
import pytest

from medkit.core.knowledge import NODE_TYPES, RELATIONS, KnowledgeGraph, Triple, build_prompt
from medkit.cxr.labeler import OBSERVATIONS


@pytest.fixture(scope="module")
def kg() -> KnowledgeGraph:
    return KnowledgeGraph.load()


def test_packaged_graph_loads(kg):
    assert isinstance(kg.graph, nx.MultiDiGraph)
    assert 100 <= len(kg) <= 200
    assert kg.graph.graph["name"] == "knowledge_cxr"
    assert kg.graph.graph["normal_node"] == "No Finding"
    assert {t for _, t in kg.graph.nodes(data="type")} <= set(NODE_TYPES)
    assert {t.relation for t in kg.triples()} <= set(RELATIONS)
    triples = list(kg.triples())
    assert len(triples) == len(set(triples))


@pytest.mark.parametrize("observation", OBSERVATIONS)
def test_every_observation_is_covered(kg, observation):
    assert kg.graph.nodes[observation]["type"] == "observation"
    triples = kg.query([observation], max_per_finding=100)
    assert len(triples) >= 4, [str(t) for t in triples]
    assert any(t.relation == "image representation" for t in triples)


def test_observations_are_the_chexpert_14_in_order(kg):
    assert kg.observations() == list(OBSERVATIONS)


def test_mission_examples_are_in_the_graph(kg):
    triples = set(kg.triples())
    for head, relation, tail in [
        ("Pleural Effusion", "located at", "costophrenic angle"),
        ("Pleural Effusion", "image representation", "blunted costophrenic angle"),
        ("Pleural Effusion", "image representation", "meniscus sign"),
        ("Cardiomegaly", "measured by", "cardiothoracic ratio > 0.5"),
        ("Cardiomegaly", "image representation", "enlarged cardiac silhouette"),
        ("Pneumonia", "image representation", "blurred edges"),
        ("Pneumonia", "image representation", "increased lung texture"),
        ("Pneumothorax", "image representation", "deep sulcus sign"),
        ("Edema", "image representation", "kerley b lines"),
    ]:
        assert Triple(head, relation, tail) in triples


def test_triple_str():
    assert str(Triple("Pneumonia", "located at", "lower lobes")) == "<Pneumonia, located at, lower lobes>"


def test_query_order_dedup_and_case(kg):
    got = kg.query(["cardiomegaly", "PLEURAL EFFUSION", " Cardiomegaly "], max_per_finding=2)
    assert got == [
        Triple("Cardiomegaly", "image representation", "enlarged cardiac silhouette"),
        Triple("Cardiomegaly", "measured by", "cardiothoracic ratio > 0.5"),
        Triple("Pleural Effusion", "image representation", "blunted costophrenic angle"),
        Triple("Pleural Effusion", "image representation", "meniscus sign"),
    ]
    # order follows the findings as given
    swapped = kg.query(["Pleural Effusion", "Cardiomegaly"], max_per_finding=2)
    assert swapped == got[2:] + got[:2]
    assert kg.query(["Cardiomegaly"], max_per_finding=2) == kg.query(["Cardiomegaly"], max_per_finding=2)


def test_query_relation_filter(kg):
    got = kg.query(["Pleural Effusion"], relations=["located at"])
    assert got == [
        Triple("Pleural Effusion", "located at", "costophrenic angle"),
        Triple("Pleural Effusion", "located at", "pleural space"),
    ]


def test_query_unknown_finding_ignored(kg):
    assert kg.query(["Unicorn"]) == []
    assert kg.query(["Unicorn", "Edema", "Lung Unicorn"]) == kg.query(["Edema"])
    assert kg.query([]) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"findings": "Edema"}, {"findings": ["Edema"], "max_per_finding": 0}, {"findings": ["Edema"], "relations": ["cures"]}],
)
def test_query_bad_arguments(kg, kwargs):
    with pytest.raises(ValueError):
        kg.query(**kwargs)


def test_prompt_no_findings(kg):
    assert kg.prompt([]) == (
        "Disease symptoms: none. Image representation: clear lungs; normal heart size; no pleural effusion."
    )
    assert build_prompt([], []) == "Disease symptoms: none."


def test_prompt_one_finding(kg):
    f = ["Pleural Effusion"]
    assert build_prompt(f, kg.query(f, max_per_finding=3)) == (
        "Disease symptoms: pleural effusion. Image representation: blunted costophrenic angle; meniscus sign. "
        "Location: costophrenic angle."
    )


def test_prompt_three_findings(kg):
    f = ["Cardiomegaly", "Edema", "Pleural Effusion"]
    prompt = build_prompt(f, kg.query(f, max_per_finding=3))
    assert prompt == (
        "Disease symptoms: cardiomegaly, edema, pleural effusion. Image representation: enlarged cardiac "
        "silhouette; kerley b lines; vascular redistribution; blunted costophrenic angle; meniscus sign. "
        "Location: heart; perihilar region; costophrenic angle. Measurement: cardiothoracic ratio > 0.5."
    )
    assert kg.prompt(f) == prompt


def test_prompt_dedups_tails_and_findings():
    triples = [
        Triple("Pneumonia", "image representation", "airspace consolidation"),
        Triple("Consolidation", "image representation", "Airspace consolidation"),
    ]
    assert build_prompt(["Pneumonia", "Consolidation", "pneumonia"], triples) == (
        "Disease symptoms: pneumonia, consolidation. Image representation: airspace consolidation."
    )


def test_prompt_stays_short(kg):
    # ~45 words is ~60-85 SmolLM2 tokens for these terms; the prompt is prepended to a small LM's input
    obs = [o for o in kg.observations() if o != "No Finding"]
    for combo in itertools.combinations(obs, 3):
        assert len(kg.prompt(list(combo)).split()) <= 45, combo


def _same_graph(a: KnowledgeGraph, b: KnowledgeGraph) -> None:
    assert list(a.triples()) == list(b.triples())
    assert dict(a.graph.nodes(data="type")) == dict(b.graph.nodes(data="type"))
    assert a.graph.graph == b.graph.graph


@pytest.mark.parametrize("suffix", [".json", ".graphml"])
def test_round_trip(kg, tmp_path, suffix):
    path = tmp_path / f"kg{suffix}"
    kg.save(path)
    _same_graph(kg, KnowledgeGraph.load(path))
    _same_graph(kg, KnowledgeGraph.load(str(path)))


def test_json_save_matches_packaged_file(kg, tmp_path):
    from medkit.core.knowledge import packaged_graph_path

    kg.save(tmp_path / "kg.json")
    assert (tmp_path / "kg.json").read_text(encoding="utf-8") == packaged_graph_path().read_text(encoding="utf-8")


def test_loads_networkx_node_link_json(kg, tmp_path):
    path = tmp_path / "node_link.json"
    path.write_text(json.dumps(nx.node_link_data(kg.graph, edges="links")), encoding="utf-8")
    _same_graph(kg, KnowledgeGraph.load(path))


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD_NODES = [{"id": "A", "type": "observation"}, {"id": "b", "type": "sign"}]


@pytest.mark.parametrize(
    "name, text",
    [
        ("broken.json", "{not json"),
        ("list.json", "[1, 2]"),
        ("no_type.json", json.dumps({"nodes": [{"id": "A"}], "edges": []})),
        ("bad_type.json", json.dumps({"nodes": [{"id": "A", "type": "organism"}], "edges": []})),
        (
            "bad_relation.json",
            json.dumps({"nodes": GOOD_NODES, "edges": [{"head": "A", "relation": "cures", "tail": "b"}]}),
        ),
        (
            "undeclared.json",
            json.dumps({"nodes": GOOD_NODES, "edges": [{"head": "A", "relation": "suggests", "tail": "c"}]}),
        ),
        ("no_edges.json", json.dumps({"nodes": GOOD_NODES})),
        (
            "bad_normal.json",
            json.dumps({"normal_node": "Z", "nodes": GOOD_NODES, "edges": []}),
        ),
        ("broken.graphml", "<graphml><oops"),
        ("kg.txt", "A suggests b"),
    ],
)
def test_bad_file_raises_value_error_naming_it(tmp_path, name, text):
    path = _write(tmp_path, name, text)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        KnowledgeGraph.load(path)


def test_graphml_without_relation_raises(tmp_path):
    g = nx.MultiDiGraph()
    g.add_node("A", type="observation")
    g.add_node("b", type="sign")
    g.add_edge("A", "b")
    path = tmp_path / "norel.graphml"
    nx.write_graphml(g, path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*relation"):
        KnowledgeGraph.load(path)


def test_missing_file_raises_value_error(tmp_path):
    path = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=re.escape(str(path))):
        KnowledgeGraph.load(path)


def test_save_unknown_suffix(kg, tmp_path):
    with pytest.raises(ValueError, match="kg.csv"):
        kg.save(tmp_path / "kg.csv")
