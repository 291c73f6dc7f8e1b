from collections import Counter

from in2.synth.corpus import Text, reflow
from in2.synth.segment import Segmenter, group_lines, split_lines


def test_group_lines_accumulates_to_min_and_merges_tail():
    assert group_lines([50, 50, 50, 100, 30], 128) == [[0, 1, 2], [3, 4]]
    assert group_lines([200, 10], 128) == [[0, 1]]  # tail of 10 merged into the previous segment
    assert group_lines([20, 20], 128) == [[0, 1]]  # short text: one group below min (caller drops)
    assert group_lines([128, 128, 128], 128) == [[0], [1], [2]]


def test_split_lines_drops_blank_lines():
    assert split_lines("a\n\n  b  \n\t\nc") == ["a", "b", "c"]


def test_reflow_joins_wrapped_lines():
    assert reflow("Title\n=====\n\nOne line\nwrapped.\n\nNext") == "Title\nOne line wrapped.\nNext"


def _para(i: int, words: int) -> str:
    return " ".join(f"word{i}x{j}" for j in range(words))


def test_segments_are_whole_lines_of_at_least_min_tokens(mistral_tokenizer):
    seg = Segmenter(mistral_tokenizer, min_tokens=128, max_tokens=4096)
    text = "\n".join(_para(i, 25) for i in range(12))
    stats = Counter()
    [src] = seg([Text("t", text)], stats)
    lines = text.split("\n")
    assert "\n".join(src.segments) == text  # nothing lost, nothing reordered
    for s in src.segments:
        assert all(line in lines for line in s.split("\n"))  # whole lines only
    exact = [len(mistral_tokenizer("\n" + s, add_special_tokens=False)["input_ids"]) - 2 for s in src.segments]
    assert src.tokens == exact
    assert all(t >= 128 for t in src.tokens)
    assert len(src.segments) >= 2


def test_short_texts_and_huge_lines_are_counted_not_kept(mistral_tokenizer):
    seg = Segmenter(mistral_tokenizer, min_tokens=128, max_tokens=300)
    stats = Counter()
    out = seg([Text("short", "just a few words"), Text("huge", _para(0, 400)), Text("ok", _para(1, 60))], stats)
    assert [s.id for s in out] == ["ok"]
    assert stats["skipped_too_short"] == 1 and stats["skipped_segment_too_long"] == 1


def test_parquet_corpus_streams_rows_with_ids_and_shards(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest

    from in2.errors import ConfigError
    from in2.synth.config import CorpusConfig
    from in2.synth.corpus import iter_texts

    path = tmp_path / "c.parquet"
    table = pa.table(
        {"body": [f"text number {i}" if i != 3 else "" for i in range(2500)], "url": [f"u{i}" for i in range(2500)]}
    )
    pq.write_table(table, path, row_group_size=700)
    stats = Counter()
    cfg = CorpusConfig(source=str(path), text_field="body", id_field="url")
    texts = list(iter_texts(cfg, stats=stats))
    assert len(texts) == 2499 and stats["skipped_empty"] == 1 and stats["texts_read"] == 2500
    assert (texts[0].id, texts[0].text) == ("u0", "text number 0") and texts[-1].id == "u2499"
    shard = list(iter_texts(cfg, shard_index=1, num_shards=2))
    assert [t.id for t in shard[:3]] == ["u1", "u5", "u7"]  # odd rows; u3 is empty
    with pytest.raises(ConfigError, match="field .text. not found.*body"):
        list(iter_texts(CorpusConfig(source=str(path))))
