"""Real-world and short-context evaluation: LongBench metrics, truncation and runs; the short-task guard."""

import json

import pytest

from in2.config import ConfigError, EvalConfig, GeneratorConfig, from_dict
from in2.evaluation import longbench, short, suite, tables
from in2.evaluation.metrics import load as load_metric
from in2.evaluation.metrics.text import normalize, rouge_l, token_f1
from tests.conftest import MISTRAL

MIDDLE = "MIDDLE-MARKER"


def test_token_f1_and_rouge_l_by_hand():
    assert normalize("The  Cat, sat!") == "cat sat"
    # "cat sat" vs "cat sat down": 2 common, precision 1, recall 2/3 -> F1 0.8
    assert token_f1("The cat sat", "a cat sat down") == pytest.approx(0.8)
    assert token_f1("dog", "cat") == 0.0
    # LCS "the cat on the mat" = 5 of 6 words each side -> F 5/6
    assert rouge_l("the cat sat on the mat", "the cat was on the mat") == pytest.approx(5 / 6)


def test_metrics_load_offline_as_evaluate_modules_and_take_the_best_reference():
    f1 = load_metric("qa_f1").compute(predictions=["Paris", "blue"], references=[["London", "paris"], ["red"]])
    assert f1["scores"] == [1.0, 0.0] and f1["qa_f1"] == pytest.approx(0.5)
    rl = load_metric("rouge_l").compute(predictions=["ok"], references=[["ok fine", "nothing"]])
    assert rl["rouge_l"] == pytest.approx(2 / 3)  # P 1, R 1/2
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("bleu")


def test_truncate_middle_keeps_exactly_the_head_and_the_tail():
    ids = list(range(100))
    assert longbench.truncate_middle(ids, 10) == [0, 1, 2, 3, 4, 95, 96, 97, 98, 99]
    assert longbench.truncate_middle(ids, 7) == [0, 1, 2, 96, 97, 98, 99]
    assert longbench.truncate_middle(ids, 100) == ids and longbench.truncate_middle(ids, 500) == ids


def test_prompter_cuts_the_context_in_the_middle_to_the_limit(mistral_tokenizer):
    context = " ".join(["alpha"] * 400 + [MIDDLE] + ["omega"] * 400)
    prompter = longbench.Prompter(mistral_tokenizer, longbench.load_prompts(None), max_input_tokens=300)
    text = prompter("hotpotqa", {"context": context, "input": "Who wrote it?"})
    n = len(mistral_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert abs(n - 300) <= 2  # decoding the two halves and encoding again may merge a token at the seam
    assert (
        MIDDLE not in text
        and text.startswith("Answer the question")
        and text.endswith("Question: Who wrote it?\nAnswer:")
    )
    short_text = prompter("hotpotqa", {"context": "tiny", "input": "q"})
    assert "tiny" in short_text


def _longbench_data(folder):
    folder.mkdir()
    hotpot = [
        {"input": "What color is the sky?", "context": "The sky is blue.", "answers": ["blue"], "_id": "h0"},
        {"input": "Who says ok?", "context": "Everyone says ok.", "answers": ["ok"], "_id": "h1"},
        {
            "input": "Which city?",
            "context": " ".join(["alpha"] * 400 + [MIDDLE] + ["omega"] * 400),
            "answers": ["Paris"],
            "_id": "h2",
        },
    ]
    report = [{"input": "", "context": "A long report.", "answers": ["ok fine"], "_id": "g0"}]
    for name, rows in (("hotpotqa", hotpot), ("gov_report", report)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _config(tmp_path, models, **extra):
    data = {
        "tokenizer": MISTRAL,
        "suites": ["longbench"],
        "models": models,
        "output_dir": str(tmp_path / "results"),
        "longbench": {
            "tasks": ["hotpotqa", "gov_report"],
            "data": str(_longbench_data(tmp_path / "lb")),
            "max_input_tokens": 200,
        },
        **extra,
    }
    cfg = from_dict(EvalConfig, data)
    cfg.validate()
    return cfg


def _http(url, cache):
    return {
        "name": "server",
        "generator": {
            "backend": "openai",
            "model": "m",
            "base_url": url,
            "temperature": 0.0,
            "max_tokens": 128,
            "cache_dir": str(cache),
        },
    }


def test_longbench_over_http_scores_with_each_tasks_limits(tmp_path, server):
    """The canned server answers "ok": F1 1 on one of three QA rows, ROUGE-L 2/3 on the report."""
    cfg = _config(tmp_path, [_http(server.url, tmp_path / "cache")])
    out = suite.evaluate(cfg)
    data = json.loads((out / "results.json").read_text())["longbench"]["server"]
    assert data["tasks"]["hotpotqa"]["score"] == pytest.approx(100 / 3)
    assert data["tasks"]["gov_report"]["score"] == pytest.approx(200 / 3)
    assert data["average"] == pytest.approx(50.0)
    limits = {b["messages"][0]["content"][:20]: b["max_tokens"] for b in server.bodies}
    assert sorted(set(limits.values())) == [32, 512]  # hotpotqa 32 new tokens, gov_report 512
    long_prompt = next(
        b["messages"][0]["content"] for b in server.bodies if "Which city?" in b["messages"][0]["content"]
    )
    assert MIDDLE not in long_prompt and "alpha" in long_prompt and "omega" in long_prompt
    table = (out / "results.md").read_text()
    assert "| server | 33.3 | 66.7 | 50.0 |" in table
    assert "| FILM-7B (paper) | 62.1 | 33.8 | 39.9 |" in table  # hotpotqa, gov_report, paper's 9-task average
    sent = len(server.bodies)
    suite.evaluate(cfg)  # a rerun sends nothing
    assert len(server.bodies) == sent


def test_longbench_on_a_tiny_local_model_with_raw_prompts(tmp_path, tiny_model):
    local = {
        "name": "tiny",
        "generator": {
            "backend": "transformers",
            "model": str(tiny_model),
            "gguf_file": None,
            "dtype": "float32",
            "batch_size": 4,
            "temperature": 0.0,
            "max_tokens": 16,
            "cache_dir": str(tmp_path / "cache"),
        },
    }
    cfg = _config(
        tmp_path,
        [local],
        longbench={
            "tasks": ["hotpotqa"],
            "data": str(_longbench_data(tmp_path / "d")),
            "max_input_tokens": 200,
            "prompt_format": "raw",
        },
    )
    out = suite.evaluate(cfg)
    lines = (out / "predictions" / "tiny" / "sample_longbench_hotpotqa.jsonl").read_text().splitlines()
    assert len(lines) == 3
    score = json.loads((out / "results.json").read_text())["longbench"]["tiny"]["tasks"]["hotpotqa"]
    assert 0.0 <= score["score"] <= 100.0 and score["n"] == 3


def test_missing_task_file_and_bad_fields_are_named(tmp_path):
    (tmp_path / "lb").mkdir()
    with pytest.raises(FileNotFoundError, match="qasper.jsonl"):
        longbench.load_rows(str(tmp_path / "lb"), "qasper", None)
    (tmp_path / "lb" / "qasper.jsonl").write_text(json.dumps({"input": "q", "answers": ["a"]}) + "\n")
    with pytest.raises(ValueError, match="context"):
        longbench.load_rows(str(tmp_path / "lb"), "qasper", None)
    with pytest.raises(ConfigError, match="longbench.tasks"):
        from_dict(EvalConfig, {"longbench": {"tasks": ["narrative_qa"]}}).validate()


# --- short-task guard ------------------------------------------------------------------------------


def _lm_eval_task(folder):
    """A multiple-choice lm-eval task on a local file, so the real harness runs offline."""
    folder.mkdir()
    rows = [
        {"question": f"What is {i} plus one?", "choices": [str(i + 1), str(i + 2), "cat"], "answer": 0}
        for i in range(6)
    ]
    (folder / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "in2_tiny_mc.yaml").write_text(
        "task: in2_tiny_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {folder / 'tiny.jsonl'}\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    return folder


def test_short_guard_runs_lm_eval_and_reports_changes_against_the_base(tmp_path, tiny_model):
    def model(name):
        return {
            "name": name,
            "generator": {"backend": "transformers", "model": str(tiny_model), "gguf_file": None, "dtype": "float32"},
        }

    cfg = from_dict(
        EvalConfig,
        {
            "suites": ["short"],
            "models": [model("tuned"), model("base")],
            "base": "base",
            "output_dir": str(tmp_path / "results"),
            "short": {
                "tasks": [{"name": "in2_tiny_mc", "num_fewshot": 0, "metric": "acc,none"}],
                "batch_size": 4,
                "include_path": str(_lm_eval_task(tmp_path / "tasks")),
            },
        },
    )
    cfg.validate()
    out = suite.evaluate(cfg)
    data = json.loads((out / "results.json").read_text())["short"]
    assert set(data["scores"]) == {"tuned", "base"} and 0 <= data["scores"]["tuned"]["in2_tiny_mc"] <= 100
    assert data["deltas"] == {"tuned": {"in2_tiny_mc": 0.0}}  # the same weights under two names
    assert "(+0.0)" in (out / "results.md").read_text()


def test_short_guard_model_mapping_and_errors():
    hf = short.lm_eval_model(GeneratorConfig(backend="transformers", model="ckpt", gguf_file=None, dtype="bfloat16"))
    assert hf == ("hf", {"pretrained": "ckpt", "dtype": "bfloat16"})
    server = short.lm_eval_model(GeneratorConfig(backend="openai", model="m", base_url="http://h:8000/v1/"))
    assert server == (
        "local-completions",
        {"model": "m", "base_url": "http://h:8000/v1/completions", "num_concurrent": 32},
    )
    # a login in the URL travels as a basic-auth header, never inside the URL lm-eval logs
    _, args = short.lm_eval_model(GeneratorConfig(backend="openai", model="m", base_url="https://u:p%40ss@h/v1?x=1"))
    assert args["base_url"] == "https://h/v1/completions?x=1" and args["header"] == {"Authorization": "Basic dTpwQHNz"}
    with pytest.raises(ConfigError, match="GGUF"):
        short.lm_eval_model(GeneratorConfig(backend="transformers", model="x", gguf_file="m.gguf"))
    task = from_dict(EvalConfig, {}).short.tasks[0]
    with pytest.raises(ValueError, match="no 'acc,none' for mmlu"):
        short.extract({"results": {"mmlu": {"acc_norm,none": 0.5}}}, [task])
    assert short.deltas({"a": {"t": 50.0}}, None) == {}


def test_tables_show_the_papers_numbers():
    table = tables.short({"tuned": {"mmlu": 60.0}, "base": {"mmlu": 59.0}}, {"tuned": {"mmlu": 1.0}})
    assert "| tuned | 60.0 (+1.0) |" in table and "| FILM-7B (paper) | 59.2 |" in table
    lb = tables.longbench({"m": {t: {"score": 10.0} for t in longbench.TASKS}})
    assert (
        "| Mistral-7B-Instruct-v0.2 (paper) | 23.5 | 33.8 | 45.9 | 42.4 | 24.3 | 20.8 | 33.3 | 24.8 | 26.8 | 30.6 |"
        in lb
    )


def test_hub_data_zip_is_downloaded_once_and_unpacked(tmp_path, monkeypatch):
    """LongBench ships its rows as data.zip in the dataset repo; the download call is stood in for."""
    import zipfile

    import huggingface_hub

    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data/hotpotqa.jsonl", json.dumps({"input": "q", "context": "c", "answers": ["a"]}) + "\n")
    calls = []

    def download(repo_id, filename, repo_type=None):
        calls.append((repo_id, filename, repo_type))
        return str(archive)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(longbench.Path, "home", classmethod(lambda cls: tmp_path / "home"))
    rows = longbench.load_rows("THUDM/LongBench", "hotpotqa", None)
    assert rows == [{"input": "q", "context": "c", "answers": ["a"]}]
    longbench.load_rows("THUDM/LongBench", "hotpotqa", None)
    assert calls == [("THUDM/LongBench", "data.zip", "dataset")]
