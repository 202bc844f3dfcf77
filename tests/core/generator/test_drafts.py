"""Speculative greedy decoding (medkit.core.generator.drafts): the table keeps only shared phrasing, and
decoding with guesses picks exactly the tokens of decoding without them."""

from __future__ import annotations

import pytest
import torch

from medkit.core.generator import drafts
from medkit.core.config import GeneratorConfig
from medkit.core.generator.drafts import Drafter, fit_table, merge_tables


def test_table_keeps_phrases_shared_by_enough_reports():
    common, rare = [1, 2, 3, 4], [7, 8, 9]
    reports = [common] * 5 + [rare] * 4 + [[1, 2, 3, 5]]
    d = Drafter(fit_table(reports, min_reports=5, min_share=0.3))
    assert d.draft([1, 2], 4) == [3, 4]  # 4 follows (1, 2, 3) in 5 reports of 6
    assert d.draft([7], 4) == []  # in 4 reports only: never drafted
    # each report counts once, however often it repeats a phrase
    assert Drafter(fit_table([[7, 8, 7, 8, 7, 8]] * 4, min_reports=5, min_share=0.1)).draft([7], 2) == []


def test_table_drops_contexts_with_no_clear_continuation():
    reports = [[1, 2, 3]] * 5 + [[1, 2, 4]] * 5 + [[1, 2, 5]] * 5 + [[1, 2, 6]] * 5
    assert Drafter(fit_table(reports, min_reports=5, min_share=0.3)).draft([1, 2], 3) == []
    assert Drafter(fit_table(reports, min_reports=5, min_share=0.25)).draft([1, 2], 1) in ([3], [4], [5], [6])


def test_longest_context_wins_and_shorter_ones_back_off():
    reports = [[9, 1, 2]] * 5 + [[8, 1, 3]] * 6
    d = Drafter(fit_table(reports, min_reports=5, min_share=0.3))
    assert d.draft([9, 1], 1) == [2] and d.draft([8, 1], 1) == [3]
    assert d.draft([5, 1], 1) == [3]  # unseen (5, 1): the continuation of (1,) most reports share


def test_renumbering_and_merging():
    table = fit_table([[10, 11, 12]] * 5, min_reports=5, min_share=0.3)
    assert Drafter(table, {10: 0, 11: 1, 12: 2}).draft([0], 2) == [1, 2]
    assert len(Drafter(table, {10: 0, 11: 1})) < len(Drafter(table))  # rows naming 12 are dropped
    site = fit_table([[10, 13]] * 5, min_reports=5, min_share=0.3)
    merged = Drafter(merge_tables(table, site))
    assert merged.draft([10], 1) == [13] and merged.draft([11], 1) == [12]  # the site's phrase wins
    assert merge_tables(table, site).shape[1] == drafts.MAX_CONTEXT + 1


@pytest.fixture(scope="module")
def generator(tiny_lm_dir):
    from medkit.core.generator.model import ReportGenerator

    torch.manual_seed(0)
    g = ReportGenerator(GeneratorConfig(lm_path=str(tiny_lm_dir), num_beams=1, int8_inference=False,
                                        runtime="torch", prune_vocab=False), visual_dim=32, num_visual_tokens=4)
    return g.eval()


@pytest.mark.parametrize("guesses", ["right", "wrong"])
def test_speculative_decoding_picks_the_greedy_tokens(generator, monkeypatch, guesses):
    from medkit.core.generator import model as generator_module

    g = generator
    torch.manual_seed(5)
    tokens, mask = torch.randn(1, 4, 32), torch.ones(1, 4, dtype=torch.bool)
    rules = dict(max_new_tokens=24, min_new_tokens=6, repetition_penalty=1.3, no_repeat_ngram_size=3)
    calls = []
    feed = generator_module.TorchDecoding.feed
    monkeypatch.setattr(generator_module.TorchDecoding, "feed", lambda self, t: calls.append(len(t)) or feed(self, t))
    with torch.no_grad():
        g._drafter = None
        plain = g.generate(tokens, mask, ["x"], **rules)
        plain_calls, calls[:] = len(calls), []
        ids = g.report_ids(plain[0])
        # the table learnt from the greedy report itself guesses right; one that follows each of
        # its tokens with another token guesses wrong
        texts = [ids] if guesses == "right" else [[a, b - 1 if b > 0 else 1] for a, b in zip(ids, ids[1:])]
        g._drafter = Drafter(fit_table(texts * 5, min_reports=5, min_share=0.3))
        try:
            fast = g.generate(tokens, mask, ["x"], **rules)
        finally:
            g._drafter = None
    assert plain[0] and fast == plain
    assert max(calls) > 1  # guesses were scored
    if guesses == "right":
        assert len(calls) < plain_calls / 2


def test_report_text_learning_leaves_out_deidentification_placeholders(generator):
    g = generator
    old = g.report_vocab.clone(), g.draft_table.clone()
    try:
        g.learn_report_text(["The pulmonary XXXX are normal. XXXX-A-XXXX in place."] * 6)
        vocab = set(g.report_vocab.tolist())
        placeholder = set(g.tokenizer(" XXXX", add_special_tokens=False).input_ids)
        assert placeholder and placeholder.isdisjoint(vocab)
        assert placeholder.isdisjoint(g.draft_table.flatten().tolist())
        assert set(g.report_ids("The pulmonary are normal. -A- in place.")) <= vocab  # the rest is learnt
    finally:
        g.report_vocab, g.draft_table = old
