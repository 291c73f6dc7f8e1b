"""RULER through lm-eval's `ruler` tasks, offline: examples sized with a local tokenizer folder, answered over
HTTP by the test server (a perfect reader of needles and word counts, "ok" to anything else), scored by in2 from lm-eval's
logged answers and checked against lm-eval's own scores. Raw prompts (apply_chat_template: false): with the chat
template lm-eval sends token ids, which the test server cannot read."""

import hashlib
import json
import sys
import zipfile
from pathlib import Path

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
    (out / "predictions" / "reader" / "ruler_4096.json").unlink()  # as a run killed inside the length leaves it
    suite.evaluate(cfg)  # scored again, the same examples' answers from lm-eval's request cache
    assert list((out / "predictions" / "reader" / "lm-eval-cache").glob("ruler-4096-*"))
    again = [b["prompt"] for b in server.bodies[4:]]
    # variable tracking: nothing asked again. (lm-eval's CWE examples draw on a module-level generator that goes
    # on within one process, so this in-process rerun makes other CWE examples; a fresh process, as a rerun
    # after a crash is, makes the same ones.)
    assert len(again) <= 2 and not any("the list are:" not in p for p in again)
    recipe["ruler"]["limit"] = 1  # other examples: the kept scores' fingerprint no longer matches
    suite.evaluate(from_dict(EvalConfig, recipe))
    assert (
        json.loads((out / "results.json").read_text())["ruler"]["models"]["reader"]["tasks"]["ruler_cwe"]["4096"]["n"]
        == 1
    )


def test_ruler_scoring_rules_and_effective_length():
    assert ruler.example_score("niah_multivalue", " 123, 456\x00.", ["123", "456", "789"]) == pytest.approx(2 / 3)
    assert ruler.example_score("ruler_qa_squad", "It was Paris", ["paris", "Lyon"]) == 1.0
    # where in2 and lm-eval part (docs/evaluation.md): lm-eval 0.4.13 scores QA by the share of answers found
    from lm_eval.tasks.ruler.common_utils import process_results

    doc = {"max_length": 4096, "outputs": ["paris", "Lyon"]}
    assert process_results(doc, ["It was Paris"])["4096"] == 0.5
    assert ruler.example_score("ruler_cwe", "It was Paris", ["paris", "Lyon"]) == 0.5  # the same rule elsewhere
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


def test_a_tiny_model_runs_a_noise_haystack_niah_task_offline(tmp_path, monkeypatch):
    """RULER on a real model, offline: SmolLM2-135M-Instruct (the demo's GGUF, through the folder in2 converts
    it into) answers lm-eval's noise-haystack NIAH task at 4K in-process through lm-eval's `hf` model. Catches
    a GGUF model refused by lm-eval, a noise-haystack task that asks the network (punkt_tab, essays), and
    in2's scoring parting from lm-eval's on a real model's answers (which, unlike the canned server's, are
    neither all right nor all wrong by construction)."""
    import nltk

    from in2.evaluation import suite

    recipe = {
        "suites": ["ruler"],
        "ruler": {"tasks": ["niah_single_1"], "lengths": [4096], "limit": 3},
        "models": [{"name": "smollm2", "generator": {"backend": "transformers", "temperature": 0.0}}],
        "output_dir": str(tmp_path / "results"),
    }
    monkeypatch.delitem(
        sys.modules, "lm_eval.tasks.ruler.prepare_niah", raising=False
    )  # its import looks for punkt_tab

    def no_download(*args, **kwargs):
        raise AssertionError(f"nltk.download{args} asked for the network")

    monkeypatch.setattr(nltk, "download", no_download)
    out = suite.evaluate(from_dict(EvalConfig, recipe))
    data = json.loads((out / "results.json").read_text())["ruler"]
    assert data["data"] == {}  # no file to download
    r = data["models"]["smollm2"]["tasks"]["niah_single_1"]["4096"]
    assert r["n"] == 3 and r["score"] == pytest.approx(r["lm_eval"], abs=0.01)
    assert r["score"] > 0  # the model reads the needle (3 of 3 when written): the prompt and answer reach it whole
    kept = json.loads((out / "predictions" / "smollm2" / "ruler_4096.json").read_text())
    assert kept["scores"]["niah_single_1"] == r


def _ruler_files(served):
    """Stand-ins for RULER's four downloads, written into the file server's folder: {name: (file, sha256)}.
    Essays (pydoc's topics, as the Hub parquet), a punkt_tab zip of empty parameters, and SQuAD- and
    HotpotQA-shaped dev sets of 500 questions each (lm-eval makes 500 examples per length)."""
    from pydoc_data.topics import topics

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [topics[k] for k in sorted(topics)]}), served / "essays.parquet")
    with zipfile.ZipFile(served / "punkt_tab.zip", "w") as z:
        for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
            z.writestr(f"punkt_tab/english/{name}", "")
    paragraphs = [
        {
            "context": f"Ledger page {p} lists ten code words. " + " ".join(f"Entry {p}-{q} reads saffron{p}x{q}." for q in range(10)),
            "qas": [
                {"question": f"What does entry {p}-{q} read?", "answers": [{"text": f"saffron{p}x{q}"}], "is_impossible": False}
                for q in range(10)
            ],
        }
        for p in range(50)
    ]  # fmt: skip
    (served / "dev-v2.0.json").write_text(json.dumps({"data": [{"paragraphs": paragraphs}]}))
    hotpot = [
        {
            "question": f"Which harbor did ship {i} leave from?",
            "answer": f"Port{i}",
            "context": [[f"Ship {i}", [f"Ship {i} left from Port{i}.", " It sailed east."]], [f"Gull {i}", ["A gull."]]],
        }
        for i in range(500)
    ]  # fmt: skip
    (served / "hotpot_dev_distractor_v1.json").write_text(json.dumps(hotpot))
    names = {"essays": "essays.parquet", "punkt_tab": "punkt_tab.zip", "squad": "dev-v2.0.json",
             "hotpotqa": "hotpot_dev_distractor_v1.json"}  # fmt: skip
    return {n: (f, hashlib.sha256((served / f).read_bytes()).hexdigest()) for n, f in names.items()}


def test_ruler_downloads_are_fetched_once_pinned_checked_and_what_lm_eval_reads(
    tmp_path, server, file_server, tiny_model, monkeypatch
):
    """The essay-haystack NIAH and QA tasks read in2's checked copies of their files, over real HTTP from a local
    server: catches lm-eval reading its own (unpinned) sources instead (the Hub is offline here, so its essays,
    punkt_tab and SQuAD could not load), a file downloaded again on every run, a changed file accepted, and an
    unpinned file whose first digest is not kept."""
    from in2.errors import ConfigError
    from in2.evaluation import ruler_data, suite

    monkeypatch.setattr(ruler_data, "cache_root", lambda: tmp_path / "cache")
    served, url, asked = file_server
    files = _ruler_files(served)
    data = {f"{n}_url": url + f for n, (f, _) in files.items()}
    data |= {f"{n}_sha256": h for n, (_, h) in files.items() if n != "hotpotqa"}  # hotpotqa: unpinned, as shipped
    tasks = ["niah_single_2", "ruler_qa_squad", "ruler_qa_hotpot"]

    def recipe(name):
        return {
            "suites": ["ruler"],
            "ruler": {"tasks": tasks, "lengths": [4096], "limit": 1, "tokenizer": str(tiny_model),
                      "apply_chat_template": False, "data": data},
            "models": [{"name": "reader", "generator": {"backend": "openai", "model": "canned", "base_url": server.url,
                        "cache_dir": str(tmp_path / "llm")}}],
            "output_dir": str(tmp_path / name),
        }  # fmt: skip

    out = suite.evaluate(from_dict(EvalConfig, recipe("first")))
    result = json.loads((out / "results.json").read_text())["ruler"]
    assert {n: (d["sha256"], d["pinned"]) for n, d in result["data"].items()} == {
        n: (h, n != "hotpotqa") for n, (_, h) in files.items()
    }
    scores = result["models"]["reader"]["tasks"]
    assert scores["niah_single_2"]["4096"]["score"] == pytest.approx(100.0)  # the canned reader finds the needle
    prompts = [b["prompt"] for b in server.bodies]
    assert len(prompts) == 3
    essay = next(p for p in prompts if "special magic" in p)
    assert "Assert statements are a convenient way to insert debugging assertions" in essay  # pydoc's, not the Hub's
    assert any("What does entry" in p and "saffron" in p for p in prompts)  # the served SQuAD stand-in
    assert any("Which harbor did ship" in p and "It sailed east." in p for p in prompts)  # the served HotpotQA
    assert sorted(asked) == sorted("/" + f for f, _ in files.values())

    suite.evaluate(from_dict(EvalConfig, recipe("second")))  # new results folder: asks the model again
    assert len(asked) == 4 and len(server.bodies) == 6  # the files were not downloaded again

    cfg = from_dict(EvalConfig, recipe("third")).ruler
    kept = ruler_data.fetch_all(cfg.data, tasks)
    Path(kept["hotpotqa"]["path"]).write_text("[]")  # the unpinned file changes after its first download
    with pytest.raises(
        ConfigError, match=r"ruler.data.hotpotqa_sha256: .* not " + files["hotpotqa"][1] + r" \(recorded"
    ):
        ruler_data.fetch_all(cfg.data, tasks)
    Path(kept["essays"]["path"]).write_bytes(b"not the essays")
    bad = hashlib.sha256(b"not the essays").hexdigest()
    with pytest.raises(ConfigError, match=rf"ruler.data.essays_sha256: .* has sha256 {bad}, not {files['essays'][1]}"):
        ruler_data.fetch_all(cfg.data, ["niah_single_2"])
    login = url.replace("http://", "http://reader:s3cret@")  # a mirror behind a login, file missing there
    with pytest.raises(ConfigError, match=r"ruler.data.squad_url: cannot download") as missing:
        ruler_data.fetch_all(
            from_dict(EvalConfig, {"ruler": {"data": {"squad_url": login + "gone.json"}}}).ruler.data,
            ["ruler_qa_squad"],
        )
    assert "s3cret" not in str(missing.value) and url + "gone.json" in str(missing.value)
