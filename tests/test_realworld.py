"""Real-world and short-context evaluation: LongBench metrics, truncation and runs; the short-task guard."""

import hashlib
import json
import re
from pathlib import Path

import pytest

from in2.errors import ConfigError
from in2.evaluation import longbench, short, suite, tables
from in2.evaluation.config import EvalConfig
from in2.evaluation.metrics import load as load_metric
from in2.evaluation.metrics.text import normalize, rouge_l, token_f1
from in2.evaluation.tasks import LONGBENCH_TASKS
from in2.llm.config import GeneratorConfig
from in2.recipes import from_dict
from tests.conftest import MISTRAL

MIDDLE = "MIDDLE-MARKER"


def test_token_f1_and_rouge_l_by_hand():
    assert normalize("The  Cat, sat!") == "cat sat"
    # "cat sat" vs "cat sat down": 2 common, precision 1, recall 2/3 -> F1 0.8
    assert token_f1("The cat sat", "a cat sat down") == pytest.approx(0.8)
    assert token_f1("dog", "cat") == 0.0
    # the `rouge` package counts distinct words: LCS "the cat on the mat" is 4 distinct of 5 each side -> 0.80
    assert rouge_l("the cat sat on the mat", "the cat was on the mat") == pytest.approx(0.8)
    assert rouge_l("The cat sat", "the cat sat") == pytest.approx(2 / 3)  # case-sensitive
    # sentences split on '.': the union LCS finds both reference sentences in one hypothesis sentence order
    assert rouge_l("b a. c d", "a b. c d") == pytest.approx(0.75)
    assert rouge_l("", "a b") == 0.0 and rouge_l("a b", "") == 0.0  # the package raises: 0, as LongBench


def test_rouge_l_runs_out_of_recursion_where_longbench_does_whatever_the_callers_depth():
    """The `rouge` package rebuilds an LCS recursively: a long text without a full stop exceeds Python's
    default limit in LongBench's script and scores 0 there; in2 gets the same, however deep it is called."""
    short, long = " ".join(["word"] * 900), " ".join(["word"] * 1200)

    def nested(depth, prediction):
        return rouge_l.__wrapped__(prediction, prediction) if depth == 0 else nested(depth - 1, prediction)

    for depth in (0, 300):
        assert nested(depth, short) == pytest.approx(1.0)
        assert nested(depth, long) == 0.0


def test_fast_lcs_table_equals_the_rouge_packages():
    """in2 swaps the `rouge` package's n x m dict of LCS lengths for bit-parallel rows: every cell and
    every score must be the package's own."""
    import importlib
    import random

    from rouge import Rouge, rouge_score

    from in2.evaluation.metrics.text import _LcsTable

    rng = random.Random(0)
    words = "ab cd ef Gh ij ab. cd.".split()
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 40))) for _ in range(30)]
    importlib.reload(rouge_score)  # the package's own code, whatever in2 installed before
    for _ in range(200):
        x, y = rng.choices("abcde", k=rng.randint(0, 30)), rng.choices("abcdef", k=rng.randint(0, 30))
        table, fast = rouge_score._lcs(x, y), _LcsTable(x, y)
        assert all(table[i, j] == fast[i, j] for i in range(len(x) + 1) for j in range(len(y) + 1))
    expected = [Rouge(metrics=["rouge-l"]).get_scores([a], [b], avg=True)["rouge-l"]["f"] for a in texts for b in texts]
    assert [rouge_l.__wrapped__(a, b) for a in texts for b in texts] == expected
    assert rouge_score._lcs is _LcsTable  # the scores above came from in2's table


def test_metrics_load_offline_as_evaluate_modules_and_take_the_best_reference():
    f1 = load_metric("qa_f1").compute(predictions=["Paris", "blue"], references=[["London", "paris"], ["red"]])
    assert f1["scores"] == [1.0, 0.0] and f1["qa_f1"] == pytest.approx(0.5)
    rl = load_metric("rouge_l").compute(predictions=["ok"], references=[["ok fine", "nothing"]])
    assert rl["rouge_l"] == pytest.approx(2 / 3)  # P 1, R 1/2
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("bleu")


def test_truncate_middle_keeps_half_the_limit_at_each_end():
    ids = list(range(100))
    assert longbench.truncate_middle(ids, 10) == [0, 1, 2, 3, 4, 95, 96, 97, 98, 99]
    assert longbench.truncate_middle(ids, 7) == [0, 1, 2, 97, 98, 99]  # LongBench: int(7 / 2) at each end
    assert longbench.truncate_middle(ids, 100) == ids and longbench.truncate_middle(ids, 500) == ids


@pytest.fixture(scope="module")
def mistral_with_bos():
    """The Mistral tokenizer from mistral-common, adding BOS as Mistral's Hub tokenizer does."""
    from transformers import AutoTokenizer

    from in2.assets import resolve
    from in2.tokenizer import _sentencepiece_dir

    return AutoTokenizer.from_pretrained(
        str(_sentencepiece_dir(Path(resolve(MISTRAL["name_or_path"])))), add_bos_token=True
    )


def test_truncation_counts_bos_and_keeps_limit_minus_one_content_tokens(mistral_with_bos):
    """LongBench's pred.py at max_length L: the prompt with BOS has n + 1 tokens; more than L are cut
    to L/2 + L/2 tokens, BOS among them. L-1 content tokens stay whole; L and L+1 keep L-1."""
    tok, limit = mistral_with_bos, 64
    prompter = longbench.Prompter(tok, {"hotpotqa": "{context}"}, limit)
    kept = {}
    for n in (limit - 1, limit, limit + 1):
        text = " ".join(["the"] * n)  # "▁the" is one token
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id and len(ids) == n + 1
        cut = longbench.truncate_middle(ids, limit)
        kept[n] = len(cut) - cut.count(tok.bos_token_id)
        out = prompter("hotpotqa", {"context": text, "input": ""})
        halves = tok.decode(cut[: limit // 2], skip_special_tokens=True) + tok.decode(
            cut[limit // 2 :], skip_special_tokens=True
        )
        assert out == (text if n == limit - 1 else halves)
    assert kept == {limit - 1: limit - 1, limit: limit - 1, limit + 1: limit - 1}


def test_prompter_cuts_the_context_in_the_middle_to_the_limit(mistral_tokenizer):
    context = " ".join(["alpha"] * 400 + [MIDDLE] + ["omega"] * 400)
    prompts, _ = longbench.load_prompts(from_dict(EvalConfig, {"longbench": {"prompts": "in2"}}).longbench)
    prompter = longbench.Prompter(mistral_tokenizer, prompts, max_input_tokens=300)
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
    # one pass over the template: a context that quotes "{input}" keeps it
    assert "say {input}" in prompter("hotpotqa", {"context": "say {input}", "input": "q"})


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


def _config(tmp_path, models, longbench=None, **extra):
    data = {
        "tokenizer": MISTRAL,
        "suites": ["longbench"],
        "models": models,
        "output_dir": str(tmp_path / "results"),
        "longbench": {
            "tasks": ["hotpotqa", "gov_report"],
            "data": str(_longbench_data(tmp_path / "lb")),
            "max_input_tokens": 200,
            "prompts": "in2",
            **(longbench or {}),
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
        "tokenizer": MISTRAL,  # "m" has no tokenizer to load
    }


def _serve_prompts(file_server, monkeypatch, revision="0123abc"):
    """A prompts file in the shape of LongBench's config/dataset2prompt.json (our own wording), served at
    `<url><revision>/config/dataset2prompt.json`; the cache goes to a temporary home. Returns the
    `longbench` fields that fetch it."""
    served, url, _ = file_server
    monkeypatch.setenv("HOME", str(served.parent / "home"))
    prompts = {t: f"Fixture prompt ({t}).\n\n{{context}}\n\nQuestion: {{input}}\nAnswer:" for t in LONGBENCH_TASKS}
    target = served / revision / "config" / "dataset2prompt.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(prompts, indent=4))
    return {
        "prompts": "official",
        "prompts_revision": revision,
        "prompts_url": url + "{revision}/config/dataset2prompt.json",
        "prompts_sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
    }


def test_longbench_over_http_scores_with_each_tasks_limits(tmp_path, server, file_server, monkeypatch):
    """The canned server answers "ok": F1 1 on one of three QA rows, ROUGE-L 2/3 on the report. Official
    prompts (served here) and `film` scoring put the paper's rows beside ours; `longbench` scoring not."""
    official = _serve_prompts(file_server, monkeypatch)
    cfg = _config(tmp_path, [_http(server.url, tmp_path / "cache")], {**official, "scoring": "film"})
    out = suite.evaluate(cfg)
    results = json.loads((out / "results.json").read_text())["longbench"]
    assert results["scoring"] == "film" and results["not_comparable_with_paper"] == []
    assert results["prompts"]["prompts"] == "official" and results["prompts"]["sha256"] == official["prompts_sha256"]
    data = results["models"]["server"]
    assert data["tasks"]["hotpotqa"]["score"] == pytest.approx(100 / 3)
    assert data["tasks"]["gov_report"]["score"] == pytest.approx(200 / 3)
    assert data["tasks"]["gov_report"]["scoring"] == "film" and data["average"] == pytest.approx(50.0)
    limits = {b["messages"][0]["content"][:20]: b["max_tokens"] for b in server.bodies}
    assert sorted(set(limits.values())) == [32, 512]  # hotpotqa 32 new tokens, gov_report 512
    assert all(b["messages"][0]["content"].startswith("Fixture prompt (") for b in server.bodies)
    long_prompt = next(
        b["messages"][0]["content"] for b in server.bodies if "Which city?" in b["messages"][0]["content"]
    )
    assert MIDDLE not in long_prompt and "alpha" in long_prompt and "omega" in long_prompt
    table = (out / "results.md").read_text()
    assert "| server | 33.3 | 66.7 | 50.0 |" in table and "scoring `film`, LongBench's official prompts" in table
    assert "| FILM-7B (paper) | 62.1 | 33.8 | 39.9 |" in table  # hotpotqa, gov_report, paper's 9-task average
    sent, asked = len(server.bodies), list(file_server[2])
    assert len(asked) == 1  # the prompts file, once

    cfg.longbench.scoring = "longbench"
    out = suite.evaluate(cfg)  # a rerun sends nothing and downloads nothing
    assert len(server.bodies) == sent and file_server[2] == asked
    table = (out / "results.md").read_text()
    assert "| server | 33.3 | 66.7 | 50.0 |" in table and "scoring `longbench`" in table
    assert "(paper)" not in table and "Not comparable with the paper's LongBench table" in table
    results = json.loads((out / "results.json").read_text())["longbench"]
    assert results["not_comparable_with_paper"] == ["`longbench` scoring, not the `film` scoring of the paper's table"]


def test_official_prompts_are_checked_and_errors_name_the_field(tmp_path, file_server, monkeypatch):
    official = _serve_prompts(file_server, monkeypatch, revision="feed")
    lb = from_dict(EvalConfig, {"longbench": official}).longbench
    prompts, source = longbench.load_prompts(lb)
    assert prompts["qmsum"].startswith("Fixture prompt (qmsum)") and source["comparable"]
    cached = Path(file_server[0].parent / "home" / ".cache/in2/longbench/prompts/feed/dataset2prompt.json")
    assert cached.is_file() and source["url"].endswith("/feed/config/dataset2prompt.json")
    # a local copy of the official file (same sha256) is as comparable; any other file or in2's wording is not
    assert longbench.load_prompts(from_dict(EvalConfig, {"longbench": {**official, "prompts": str(cached)}}).longbench)[
        1
    ]["comparable"]
    assert not longbench.load_prompts(from_dict(EvalConfig, {"longbench": {"prompts": "in2"}}).longbench)[1][
        "comparable"
    ]
    lb.prompts_sha256 = "0" * 64
    with pytest.raises(ConfigError, match=r"longbench.prompts_sha256: .* has sha256 [0-9a-f]{64}, not 0000"):
        longbench.load_prompts(lb)
    lb.prompts_revision = "gone"
    with pytest.raises(FileNotFoundError, match=r"longbench.prompts: cannot download LongBench's prompts .*/gone/"):
        longbench.load_prompts(lb)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"qasper": "{context}"}))
    with pytest.raises(ConfigError, match=r"longbench.prompts: .*bad.json has no prompt for narrativeqa"):
        longbench.load_prompts(from_dict(EvalConfig, {"longbench": {"prompts": str(bad)}}).longbench)
    with pytest.raises(FileNotFoundError, match=r"longbench.prompts: .*missing.json does not exist"):
        longbench.load_prompts(
            from_dict(EvalConfig, {"longbench": {"prompts": str(tmp_path / "missing.json")}}).longbench
        )


def test_scoring_modes_differ_only_by_films_rules():
    refs = [["Paris"], ["blue"], ["red"]]
    predictions = ["Paris\n\nIt is the capital of France, a country in Europe.", None, "red"]
    official = longbench.score("hotpotqa", predictions, refs, "longbench")
    film = longbench.score("hotpotqa", predictions, refs, "film")
    assert official["n"] == 3 and official["skipped"] == 0  # null scored as an empty answer
    assert film["n"] == 2 and film["skipped"] == 1 and film["score"] == pytest.approx(100.0)  # cut, null skipped
    assert official["score"] == pytest.approx(100 * (token_f1(predictions[0], "Paris") + 0 + 1) / 3)
    summary = ["ok\n\nfine", None]
    assert longbench.score("gov_report", summary, [["ok fine"], ["x"]], "film")["score"] == pytest.approx(100.0)
    assert longbench.score("gov_report", summary, [["ok fine"], ["x"]], "longbench")["score"] == pytest.approx(50.0)


def test_longbench_on_a_tiny_local_model_with_raw_prompts(tmp_path, tiny_model):
    """The default truncation tokenizer is the model's own (here the tiny model's folder)."""
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
        {"tasks": ["hotpotqa"], "data": str(_longbench_data(tmp_path / "d")), "prompt_format": "raw"},
        tokenizer={"name_or_path": "org/not-used", "gguf_file": None},
    )
    out = suite.evaluate(cfg)
    lines = (out / "predictions" / "tiny" / "sample_longbench_hotpotqa.jsonl").read_text().splitlines()
    assert len(lines) == 3
    score = json.loads((out / "results.json").read_text())["longbench"]["models"]["tiny"]["tasks"]["hotpotqa"]
    assert 0.0 <= score["score"] <= 100.0 and score["n"] == 3


def test_missing_task_file_and_bad_fields_are_named(tmp_path):
    (tmp_path / "lb").mkdir()
    with pytest.raises(FileNotFoundError, match="qasper.jsonl"):
        longbench.load_rows(str(tmp_path / "lb"), "qasper", None)
    (tmp_path / "lb" / "qasper.jsonl").write_text(json.dumps({"input": "q", "answers": ["a"]}) + "\n")
    with pytest.raises(ValueError, match="context"):
        longbench.load_rows(str(tmp_path / "lb"), "qasper", None)
    for field, value in (("tasks", ["narrative_qa"]), ("scoring", "paper"), ("tokenizer", "shared")):
        with pytest.raises(ConfigError, match=f"longbench.{field}"):
            from_dict(EvalConfig, {"longbench": {field: value}}).validate()
    cfg = from_dict(EvalConfig, {"models": [{"name": "api", "generator": {"backend": "openai", "model": "gpt-x"}}]})
    with pytest.raises(ConfigError, match=r"models\[0\]\.generator\.model.*set models\[0\]\.tokenizer"):
        longbench.model_tokenizer(cfg, 0)


def test_film_eval_recipe_uses_official_prompts_and_fits_the_32k_window():
    from in2.recipes import load_config

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "film-7b"
    cfg = load_config(EvalConfig, recipe / "eval.yaml")
    assert cfg.longbench.prompts == "official" and cfg.longbench.tokenizer == "model"
    assert cfg.longbench.scoring == "film" and cfg.longbench.max_input_tokens == 31500
    for path in (recipe / "eval.yaml", recipe / "README.md", recipe.parents[1] / "docs" / "reproducing-film-7b.md"):
        windows = [int(w) for w in re.findall(r"--max-model-len (\d+)", path.read_text())]
        assert all(w <= 32768 for w in windows), path


PARITY = Path(__file__).resolve().parents[2] / "shared" / "film" / "longbench"


@pytest.mark.skipif(not PARITY.is_dir(), reason=f"FILM's released LongBench predictions are not at {PARITY}")
def test_parity_on_films_released_predictions():
    """benchmarks/longbench_parity.py on the paper's own outputs: `longbench` scoring gives LongBench's
    official averages to 0.01, `film` scoring the paper's per-task scores to 0.05 (and FILM's averages)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "longbench_parity.py"
    spec = importlib.util.spec_from_file_location("longbench_parity", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    refs, scores = bench.references(PARITY), bench.parity(PARITY)
    assert set(scores["film"]) == {"Mistral-7B-Instruct-v0.2", "FILM-7B", "GPT-4-Turbo"}
    worst_average, worst_task = bench.differences(scores, refs)
    assert worst_average <= 0.01 and worst_task <= 0.05 + 1e-9
    assert all(abs(s["average"] - refs[m]["film"]) <= 0.01 for m, s in scores["film"].items())


# --- short-task guard ------------------------------------------------------------------------------


def _lm_eval_task(folder):
    """A multiple-choice lm-eval task on a local file, so the real harness runs offline."""
    folder.mkdir()
    rows = [
        # choices of equal token counts: a random model picks by its logits, not by the shortest choice
        {"question": f"What is {i} plus one?", "choices": [str(i + 1), str(i + 2), str(i + 3)], "answer": 0}
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


def test_short_guard_runs_lm_eval_and_reports_changes_against_the_base(tmp_path, tiny_model, mistral_tokenizer):
    """Two models with different weights and answers (the tiny Mistral, and the same shape from another seed),
    so a wrong delta (base minus tuned, the tuned score itself, 0) shows."""
    import torch

    from tests.conftest import tiny_mistral

    torch.manual_seed(1)
    other = tmp_path / "seed-1"
    tiny_mistral(len(mistral_tokenizer), hidden_size=32, layers=2, heads=4, kv_heads=2).save_pretrained(other)
    mistral_tokenizer.save_pretrained(other)
    folders = {"tuned": other, "base": tiny_model}

    def model(name):
        return {
            "name": name,
            "generator": {
                "backend": "transformers",
                "model": str(folders[name]),
                "gguf_file": None,
                "dtype": "float32",
            },
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
    tuned, base = data["scores"]["tuned"]["in2_tiny_mc"], data["scores"]["base"]["in2_tiny_mc"]
    assert set(data["scores"]) == {"tuned", "base"} and tuned != base, (tuned, base)
    assert all(x * 6 / 100 == pytest.approx(round(x * 6 / 100)) for x in (tuned, base))  # right of 6 questions
    assert data["deltas"] == {"tuned": {"in2_tiny_mc": pytest.approx(tuned - base)}}
    assert f"| tuned | {tuned:.1f} ({tuned - base:+.1f}) |" in (out / "results.md").read_text()


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
    # a GGUF file: lm-eval loads the float32 folder in2 converts it into once (the demo's SmolLM2)
    model, args = short.lm_eval_model(GeneratorConfig(backend="transformers", dtype="bfloat16"))
    assert model == "hf" and args["dtype"] == "float32" and (Path(args["pretrained"]) / "model.safetensors").is_file()
    with pytest.raises(FileNotFoundError, match="gguf_file: x/m.gguf does not exist"):
        short.lm_eval_model(GeneratorConfig(backend="transformers", model="x", gguf_file="m.gguf"))
    task = from_dict(EvalConfig, {}).short.tasks[0]
    with pytest.raises(ValueError, match="no 'acc,none' for mmlu"):
        short.extract({"results": {"mmlu": {"acc_norm,none": 0.5}}}, [task])
    assert short.deltas({"a": {"t": 50.0}}, None) == {}


def test_tables_show_the_papers_numbers():
    table = tables.short({"tuned": {"mmlu": 60.0}, "base": {"mmlu": 59.0}}, {"tuned": {"mmlu": 1.0}})
    assert "| tuned | 60.0 (+1.0) |" in table and "| FILM-7B (paper) | 59.2 |" in table
    results = {"m": {t: {"score": 10.0} for t in LONGBENCH_TASKS}}
    official = {"prompts": "official", "comparable": True}
    lb = tables.longbench(results, "film", official)
    assert (
        "| Mistral-7B-Instruct-v0.2 (paper) | 23.5 | 33.8 | 45.9 | 42.4 | 24.3 | 20.8 | 33.3 | 24.8 | 26.8 | 30.6 |"
        in lb
    )
    for scoring, prompts in (("longbench", official), ("film", {"prompts": "in2", "comparable": False})):
        lb = tables.longbench(results, scoring, prompts)
        assert "| m | 10.0 |" in lb and "(paper)" not in lb and "Not comparable" in lb and f"scoring `{scoring}`" in lb
    assert "in2's own prompts" in lb


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
