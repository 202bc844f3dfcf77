"""Draft tokens for speculative greedy decoding, from phrases common to many training reports.

Why: a CPU decoding step reads every LM weight once whatever the number of positions it
scores (measured on the shipped model, ONNX Runtime, 2 threads: scoring 4 positions costs
about 1.4 steps of 1), and chest X-ray reports repeat the same phrases. So the decoder guesses
the next few tokens from an n-gram table, scores them all in one step, and keeps the guesses
that greedy decoding would have picked anyway: the report is the greedy one, only sooner.

The table holds, for each context of 1 to ``MAX_CONTEXT`` tokens, the continuation most
training reports share. A continuation is kept only when at least ``min_reports`` distinct
reports contain it and it is at least ``min_share`` of what follows that context, so the
table holds common phrasing, never the wording of one report.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import torch

MAX_CONTEXT = 3  # tokens of context; shorter contexts are the back-off
_PAD = -1


def as_table(rows: Sequence[Sequence[int]] = ()) -> torch.Tensor:
    """Rows of (right-aligned context, next token) as the (rows, MAX_CONTEXT + 1) long tensor a
    model stores (no rows: an empty table)."""
    return torch.tensor(sorted(rows), dtype=torch.long).reshape(-1, MAX_CONTEXT + 1)  # sorted: deterministic


def fit_table(reports: Iterable[Sequence[int]], min_reports: int, min_share: float) -> torch.Tensor:
    """(rows, MAX_CONTEXT + 1) long tensor: right-aligned context (``-1`` padded), next token."""
    counts: dict[tuple[int, ...], Counter] = defaultdict(Counter)
    for ids in reports:
        seen = set()
        for n in range(1, MAX_CONTEXT + 1):
            for i in range(len(ids) - n):
                seen.add((tuple(ids[i:i + n]), ids[i + n]))
        for context, nxt in seen:  # each report counts once per (context, next)
            counts[context][nxt] += 1
    rows = []
    for context, c in counts.items():
        nxt, k = c.most_common(1)[0]
        if k >= min_reports and k >= min_share * sum(c.values()):
            rows.append([_PAD] * (MAX_CONTEXT - len(context)) + list(context) + [nxt])
    return as_table(rows)


class Drafter:
    """Looks up the table: longest known context first."""

    def __init__(self, table: torch.Tensor, id_map: dict[int, int] | None = None):
        """``id_map`` renumbers tokens (e.g. to a pruned vocabulary); rows with a token outside
        it are dropped."""
        self.next: dict[tuple[int, ...], int] = {}
        for row in table.tolist():
            ids = [t for t in row if t != _PAD]
            if id_map is not None:
                if any(t not in id_map for t in ids):
                    continue
                ids = [id_map[t] for t in ids]
            self.next[tuple(ids[:-1])] = ids[-1]

    def __len__(self) -> int:
        return len(self.next)

    def draft(self, history: Sequence[int], k: int) -> list[int]:
        """Up to ``k`` tokens likely to follow ``history``."""
        out: list[int] = []
        seq = list(history[-MAX_CONTEXT:])
        while len(out) < k:
            nxt = next((self.next[c] for n in range(min(MAX_CONTEXT, len(seq)), 0, -1)
                        if (c := tuple(seq[-n:])) in self.next), None)
            if nxt is None:
                break
            out.append(nxt)
            seq = (seq + [nxt])[-MAX_CONTEXT:]
        return out


def merge_tables(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``new``'s rows plus those of ``old`` whose context ``new`` does not continue."""
    known = {tuple(r[:MAX_CONTEXT]) for r in new.tolist()}
    return as_table(new.tolist() + [r for r in old.tolist() if tuple(r[:MAX_CONTEXT]) not in known])
