"""RULER through lm-eval's `ruler` tasks, offline: examples sized with a local tokenizer folder, answered over
HTTP by the test server (a perfect reader of needles and word counts, "ok" to anything else), scored by in2 from lm-eval's
logged answers and checked against lm-eval's own scores. Raw prompts (apply_chat_template: false): with the chat
template lm-eval sends token ids, which the test server cannot read."""

import json

import pytest

from in2.evaluation import ruler
from in2.evaluation.config import EvalConfig
from in2.recipes import from_dict
from tests.conftest import MISTRAL


def test_ruler_subset_offline_scores_as_lm_eval_does(tmp_path, server, tiny_model):
    from in2.evaluation import suite

    model = {
        "name": "reader",
        "generator": {"backend": "openai", "model": "canned", "base_url": server.url, "concurrency": 2,
                      "cache_dir": str(tmp_path / "cache")},
    }  # fmt: skip
    recipe = {
        "tokenizer": MISTRAL,
        "suites": ["ruler"],
        "ruler": {
            "tasks": ["ruler_cwe", "ruler_vt"],
            "lengths": [4096],
            "limit": 2,
            "tokenizer": str(tiny_model),
            "apply_chat_template": False,
        },
        "models": [model],
        "output_dir": str(tmp_path / "results"),
    }
    cfg = from_dict(EvalConfig, recipe)
    out = suite.evaluate(cfg)
    data = json.loads((out / "results.json").read_text())["ruler"]["models"]["reader"]
    # common-word extraction, read right; variable tracking, answered "ok". (The noise-haystack NIAH tasks run
    # offline too, but importing lm-eval's NIAH module builds 6.2M word pairs: ~12 s of CPU, too slow here.)
    cwe, vt = data["tasks"]["ruler_cwe"]["4096"], data["tasks"]["ruler_vt"]["4096"]
    assert cwe["n"] == vt["n"] == 2
    assert cwe["score"] == pytest.approx(100.0) and vt["score"] == pytest.approx(0.0)
    for r in (cwe, vt):
        assert r["score"] == pytest.approx(r["lm_eval"], abs=0.01)  # in2's scoring equals lm-eval's
    assert data["per_length"] == {"4096": pytest.approx(50.0)} and data["effective_length"] is None
    assert not data["all_13_tasks"] and data["offline_tasks_only"]
    prompts = [b["prompt"] for b in server.bodies]
    assert len(prompts) == 4 and sum(p.endswith("the list are:") for p in prompts) == 2  # RULER's answer prefix
    table = (out / "results.md").read_text()
    assert "| reader | 50.0 | 50.0 | below the shortest |" in table
    assert "| FILM-7B (published) |  | 75.5 | 32K |" in table and "Not all of RULER's 13 tasks" in table
    suite.evaluate(cfg)  # done: the rerun reads the kept scores and asks nothing
    assert len(server.bodies) == 4
    assert json.loads((out / "results.json").read_text())["ruler"]["models"]["reader"]["tasks"]["ruler_cwe"] == {
        "4096": cwe
    }


def test_ruler_scoring_rules_and_effective_length():
    assert ruler.example_score("niah_multivalue", " 123, 456\x00.", ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert ruler.example_score("ruler_qa_squad", "It was Paris", ["paris", "Lyon"]) == 1.0
    assert ruler.example_score("niah_single_3", "ABC-def", ["abc-DEF"]) == 1.0
    scores = {"4096": 92.8, "8192": 88.2, "16384": 87.2, "32768": 75.4, "65536": 86.0}
    assert ruler.effective_length(scores, 85.6) == 16384  # contiguous from the shortest: 64K does not count
    assert ruler.effective_length({"4096": 85.6}, 85.6) is None  # must exceed the threshold
    assert ruler.length_label(131072) == "128K"


def test_ruler_fields_are_checked():
    from in2.errors import ConfigError

    cfg = from_dict(EvalConfig, {"ruler": {"lengths": [4096, 5000]}})
    with pytest.raises(ConfigError, match=r"ruler.lengths 5000 is not one of RULER's lengths"):
        cfg.validate()
    with pytest.raises(ConfigError, match=r"ruler.tasks unknown task 'cwe'"):
        from_dict(EvalConfig, {"ruler": {"tasks": ["cwe"]}}).validate()
