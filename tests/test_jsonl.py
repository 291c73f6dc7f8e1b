"""JSON-lines reading: every kind of bad line is named with its file and line, and the CLI says it in one line."""

import json

import pytest

from in2.cli import main
from in2.jsonl import BadFileError, read_jsonl


def test_rows_come_back_and_blank_lines_are_ignored(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text('{"a": 1, "b": 2}\n\n{"a": 3, "b": 4}\n')
    assert read_jsonl(path, required=("a", "b")) == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"a": 1}\n{"a": \n', r"bad\.jsonl:2: not a JSON line"),
        (b'{"a": 1}\n[1, 2]\n', r"bad\.jsonl:2: a line must be a JSON object"),
        (b'{"a": 1}\n\n{"b": 1}\n', r"bad\.jsonl:3: missing field\(s\) a"),
        (b'{"a": "\xff"}\n', r"bad\.jsonl: not UTF-8 text"),
    ],
)
def test_bad_lines_are_named(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(BadFileError, match=message):
        read_jsonl(path, required=("a",))


def test_probe_score_names_a_broken_prediction_line(tmp_path, capsys):
    probes, preds = tmp_path / "probes", tmp_path / "preds"
    probes.mkdir()
    preds.mkdir()
    row = {"prompt": "p", "completion": "f", "position_id": 0, "set_id": 0}
    (probes / "code_backward_1k.jsonl").write_text(
        json.dumps(row) + "\n" + json.dumps({**row, "position_id": 1}) + "\n"
    )
    (preds / "sample_code_backward_1k.jsonl").write_text('{"samples": ["f"]}\n{"samples": ["f"\n')
    assert main(["probe", "score", "--probes", str(probes), "--predictions", str(preds)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("in2: error: ") and "sample_code_backward_1k.jsonl:2: not a JSON line" in err
    (probes / "code_backward_1k.jsonl").write_text(json.dumps({"prompt": "p", "set_id": 0}) + "\n")
    assert main(["probe", "score", "--probes", str(probes), "--predictions", str(preds)]) == 2
    assert "code_backward_1k.jsonl:1: missing field(s) position_id" in capsys.readouterr().err


def test_a_raw_line_separator_inside_a_string_stays_in_its_line(tmp_path):
    """json.dumps(ensure_ascii=False) writes U+2028 raw; only newlines end a JSON line."""
    path = tmp_path / "probe.jsonl"
    path.write_text(json.dumps({"a": "one\u2028two\x85three"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_jsonl(path, required=("a",)) == [{"a": "one\u2028two\x85three"}]
