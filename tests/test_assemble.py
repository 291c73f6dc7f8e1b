"""Assembly properties on real text (stdlib pydoc) with FILM-7B's tokenizer (Mistral, exact counts)."""

from collections import Counter

import pytest

from in2.config import ContextConfig, CorpusConfig
from in2.data.assemble import Assembler, FillerPool, exact_tokens, verify
from in2.data.corpus import iter_texts
from in2.data.qa import QA, QAItem
from in2.data.segment import Segmenter

N_ROWS = 1000


@pytest.fixture(scope="module")
def built(mistral_tokenizer):
    texts = list(iter_texts(CorpusConfig(source="builtin:pydoc")))
    sources = Segmenter(mistral_tokenizer, 128, 4096)(texts, Counter())
    cfg = ContextConfig(min_context_tokens=4096, max_context_tokens=32000, num_length_buckets=8, max_length=32768)
    asm = Assembler(mistral_tokenizer, cfg, seed=1)
    items = []
    for k in range(N_ROWS):
        src = sources[k % len(sources)]
        if k % 5 == 0 and len(src.segments) >= 2:
            item = QAItem(f"b{k}", "integration", "integration", src, list(range(len(src.segments))))
        else:
            item = QAItem(f"a{k}", "fine_grained", "fine_grained", src, [k % len(src.segments)])
        items.append((item, QA(f"Which detail is number {k}?", f"Detail {k} is described there.")))
    rows = list(asm.rows(items, FillerPool(sources)))
    return asm, cfg, sources, items, rows


def test_every_item_becomes_a_row(built):
    _, _, _, items, rows = built
    assert len(rows) == N_ROWS == len(items)


def test_lengths_are_balanced_over_buckets(built):
    asm, cfg, _, _, rows = built
    edges = asm.bucket_edges()
    per_bucket = Counter(min(sum(r["context_tokens"] >= e for e in edges[1:-1]), 7) for r in rows)
    expected = N_ROWS / cfg.num_length_buckets
    # Stated tolerance: every bucket within 10% of an even share (targets are exactly balanced;
    # a context can end slightly below its target when no filler fits the remaining room).
    assert all(abs(per_bucket[b] - expected) <= 0.10 * expected for b in range(8)), per_bucket
    assert all(cfg.min_context_tokens - 300 <= r["context_tokens"] <= cfg.max_context_tokens for r in rows)


def test_key_positions_are_uniform(built):
    _, _, _, _, rows = built
    positions = [p for r in rows if r["type"] == "fine_grained" for p in r["key_positions"]]
    assert all(0.0 <= p <= 1.0 for p in positions)
    bins = Counter(min(int(p * 10), 9) for p in positions)
    expected = len(positions) / 10
    # Stated tolerance: each decile within 35% of its share (about 4 standard deviations here).
    assert all(abs(bins[b] - expected) <= 0.35 * expected for b in range(10)), bins


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
