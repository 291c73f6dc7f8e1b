"""VaL probing: pools, probe building, FILM layout, scoring rules."""

import hashlib
import json
import math
import random
import re
from pathlib import Path

import pytest
import torch
import yaml

import in2
from in2.errors import ConfigError
from in2.evaluation.probing import build, pools, report, score
from in2.evaluation.tasks import PROBE_TASKS
from tests.openai_server import CannedServer, in2_process

FILM = Path(__file__).resolve().parents[2] / "shared" / "film"


@pytest.fixture(scope="module")
def offline_pools():
    from in2.synth.config import CorpusConfig
    from in2.synth.corpus import iter_texts

    texts = [t.text for t in iter_texts(CorpusConfig(source="builtin:pydoc"))]
    return {"document": pools.sentences(texts), "code": pools.functions(limit=3000), "database": pools.entities()}


def test_offline_pools_are_real_and_well_formed(offline_pools):
    doc, code, db = offline_pools["document"], offline_pools["code"], offline_pools["database"]
    assert len(doc) > 1000 and len(code) > 1000 and len(db) > 300
    for item in doc[:200]:
        assert item["piece"] in item["sentence"] and len(item["piece"].split()) == pools.PIECE_WORDS
    for item in code[:200]:
        lines = item["body"].split("\n")
        assert len(lines) == 3 and all(ln.startswith("    ") for ln in lines)
        assert item["piece"] in lines[0] + lines[1] + lines[2] and item["name"].isidentifier()
    assert len({e["id"] for e in db}) == len(db)
    assert all(e["id"].startswith("Q") and e["label"] and e["description"] for e in db)


@pytest.mark.skipif(not FILM.is_dir(), reason="FILM's pools live in the shared folder beside the checkout")
def test_film_pools_load():
    for task in PROBE_TASKS:
        items = pools.load_film(FILM / "pieces", task)
        assert len(items) > 12000
    code = pools.load_film(FILM / "pieces", "code")[0]
    assert code["piece"] in code["body"]


def test_a_missing_pool_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="code_functions.jsonl"):
        pools.load_film(tmp_path, "code")


@pytest.mark.parametrize("task", PROBE_TASKS)
@pytest.mark.parametrize("length", [1024, 4096])
def test_built_sets_fill_the_length_and_query_every_position(task, length, offline_pools, mistral_tokenizer):
    builder = build.Builder(task, offline_pools[task], mistral_tokenizer, seed=1)
    rows, skipped = builder.build_set(length, set_id=0)
    n = rows[0]["num_items"]
    assert [r["position_id"] for r in rows] == list(range(n))  # every position queried, in order
    # each prompt fits, and one more item would not: the length is met within one item
    order = list(range(len(builder.pool)))
    build.rng(1, "probe", task, length, 0).shuffle(order)
    assert builder.measure(order[:n]) <= length < builder.measure(order[: n + 1])
    assert all(builder.count(r["prompt"]) <= length for r in rows)
    assert all(r["prompt"].startswith("[INST] Below is a context") and r["prompt"].endswith(" [/INST]") for r in rows)
    # the gold item appears in its context; queries whose key repeats are exactly the skipped ones
    for i, row in enumerate(rows):
        item = builder.pool[order[row["position_id"]]]
        context = row["prompt"].split("### Context:\n")[1].split("\n\n### Instruction:")[0]
        assert (
            build.item_text(task, item) in context
            and build.key(task, item) in row["prompt"].split("### Instruction:")[1]
        )
        assert (i in skipped) == (build.occurrences(task, item, context) != 1)


def test_positions_per_span_samples_each_span(offline_pools, mistral_tokenizer):
    builder = build.Builder("document", offline_pools["document"], mistral_tokenizer)
    rows, _ = builder.build_set(2048, set_id=3, span_size=10, positions_per_span=2)
    n = rows[0]["num_items"]
    spans = [r["position_id"] // 10 for r in rows]
    assert sorted(set(spans)) == list(range(math.ceil(n / 10)))
    assert all(spans.count(s) == min(2, n - 10 * s) for s in set(spans))
    assert {r["set_id"] for r in rows} == {3}


@pytest.mark.parametrize("task", ["document", "database"])
def test_every_set_holds_the_same_whole_number_of_spans(task, offline_pools, mistral_tokenizer):
    """Like FILM's files: equal sets of whole spans (the most every set can hold), so no span is partial."""
    builder = build.Builder(task, offline_pools[task], mistral_tokenizer, seed=3)
    fits = [len(builder.fitting(1024, s)[1]) for s in range(3)]
    items = builder.items_per_set(1024, sets=3, span_size=5)
    assert items % 5 == 0 and min(fits) - 5 < items <= min(fits)
    for set_id in range(3):
        rows, _ = builder.build_set(1024, set_id, span_size=5, num_items=items)
        assert len(rows) == items and {r["num_items"] for r in rows} == {items}
    with pytest.raises(ConfigError, match="probes.span_size"):  # one line from the CLI, no traceback
        builder.items_per_set(1024, sets=3, span_size=10_000)


def test_sets_differ_and_rebuilds_are_identical(offline_pools, mistral_tokenizer):
    builder = build.Builder("code", offline_pools["code"], mistral_tokenizer, seed=7)
    a, _ = builder.build_set(1024, set_id=0)
    b, _ = builder.build_set(1024, set_id=1)
    again, _ = build.Builder("code", offline_pools["code"], mistral_tokenizer, seed=7).build_set(1024, set_id=0)
    assert a == again and a[0]["prompt"] != b[0]["prompt"]


def test_duplicate_keys_are_skipped(mistral_tokenizer):
    pool = [
        {"name": f"f{i}", "body": "    x = 1\n    y = 2\n    return x + y", "piece": "return x + y"} for i in range(5)
    ] + [{"name": "g", "body": "    a = 3\n    b = 4\n    return a * b", "piece": "return a * b"}]
    rows, skipped = build.Builder("code", pool, mistral_tokenizer).build_set(4096, set_id=0)
    assert len(rows) == 6
    assert sorted(rows[i]["completion"] for i in range(6) if i not in skipped) == ["g"]


def test_film_layout_round_trip(tmp_path, offline_pools, mistral_tokenizer):
    rows, skipped = build.Builder("database", offline_pools["database"], mistral_tokenizer).build_set(1024, 0)
    assert build.write(tmp_path, "database_forward_1k", ((r, i in skipped) for i, r in enumerate(rows))) == (
        len(rows),
        len(skipped),
    )
    assert json.loads((tmp_path / "database_forward_1k_skip_list.json").read_text()) == skipped
    back, back_skip = build.read(tmp_path, "database_forward_1k")
    assert back == rows and back_skip == skipped
    assert set(rows[0]) >= {"prompt", "label", "description", "position_id", "set_id"}


def test_length_tags():
    assert build.task_name("document", 32768) == "document_bi_32k"
    assert build.task_name("code", 1536) == "code_backward_1.5k"
    assert build.task_name("database", 65536) == "database_forward_64k"


# --- scoring ---------------------------------------------------------------------------------------


def test_example_scores_follow_the_paper():
    doc = {"completion": "The cat sat on the mat."}
    # gold words {the, cat, sat, on, mat.}: 5; the prediction has the, cat, mat. -> 3/5
    assert score.example_score("document", doc, "THE cat ate the mat.") == pytest.approx(3 / 5)
    assert score.example_score("code", {"completion": "parse_args."}, "It is parse_args().") == 1.0
    assert score.example_score("code", {"completion": "parse_args"}, "It is Parse_Args") == 0.0  # case matters
    db = {"label": "Jalan Besar Stadium", "description": "stadium in Singapore."}
    assert score.example_score("database", db, "the label is jalan besar stadium") == 1.0
    assert score.example_score("database", db, "A Stadium In Singapore") == 1.0
    assert score.example_score("database", db, "a stadium") == 0.0


def test_avg_and_gap_over_spans_and_sets():
    # 2 sets x 4 positions, span 2. set 0: 1,1,0,0; set 1: 1,0,0,0
    scored = [(0, 0, 1), (0, 1, 1), (0, 2, 0), (0, 3, 0), (1, 0, 1), (1, 1, 0), (1, 2, 0), (1, 3, 0)]
    r = score.aggregate(scored, num_positions=4, span_size=2)
    assert r["spans"] == pytest.approx([75.0, 0.0])  # span 0: (1.0 + 0.5) / 2
    assert r["avg"] == pytest.approx(37.5) and r["gap"] == pytest.approx(75.0)
    assert r["span_std"] == pytest.approx([25.0, 0.0])


def test_parity_flag_reads_49_of_50_positions():
    # one set, 100 positions, span 50: position 49 and 99 are the only failures
    scored = [(0, p, 0.0 if p in (49, 99) else 1.0) for p in range(100)]
    exact = score.aggregate(scored, 100, 50)
    film = score.aggregate(scored, 100, 50, parity=True)
    assert exact["spans"] == pytest.approx([98.0, 98.0])
    assert film["spans"] == pytest.approx([100.0, 100.0])


def test_only_whole_spans_count_and_dropped_positions_are_reported():
    # set 0 has 5 positions, set 1 has 4; span 2. Whole spans: positions 0-1 and 2-3 in both sets.
    # set 0: 1,1,0,0,1 ; set 1: 1,0,0,0. Span 0: (1.0 + 0.5) / 2 = 75; span 1: 0. Position 4 is dropped.
    scored = [(0, 0, 1), (0, 1, 1), (0, 2, 0), (0, 3, 0), (0, 4, 1), (1, 0, 1), (1, 1, 0), (1, 2, 0), (1, 3, 0)]
    r = score.aggregate(scored, num_positions=4, span_size=2)
    assert r["spans"] == pytest.approx([75.0, 0.0]) and r["dropped"] == 1
    assert r["avg"] == pytest.approx(37.5) and r["gap"] == pytest.approx(75.0)
    # The old rule counted the partial span (set 0's position 4 alone: 100) at full weight:
    # spans 75, 0, 100 -> Avg 58.3, Gap 100. Through score(), set sizes come from the rows.
    rows = [{"completion": "f", "position_id": p, "set_id": s} for s, n in ((0, 5), (1, 4)) for p in range(n)]
    preds = ["f" if v else "g" for _, _, v in scored]
    r = score.score("code_backward_test", rows, [], preds, span_size=2)
    assert r["avg"] == pytest.approx(37.5) and r["dropped"] == 1 and r["scored"] == 9
    # Sets of 6 and 4 positions: the smaller set decides (2 whole spans). Taking the larger set's 6 would add
    # a third span (set 0 alone, 100) and give Avg 58.3, Gap 75 instead of 37.5 / 25.
    values = {0: [1, 0, 1, 0, 1, 1], 1: [1, 0, 0, 0]}
    rows = [{"completion": "f", "position_id": p, "set_id": s} for s, vs in values.items() for p in range(len(vs))]
    preds = ["f" if v else "g" for vs in values.values() for v in vs]
    r = score.score("code_backward_test", rows, [], preds, span_size=2)
    assert r["spans"] == pytest.approx([50.0, 25.0]) and r["dropped"] == 2
    assert r["avg"] == pytest.approx(37.5) and r["gap"] == pytest.approx(25.0)


def test_no_signal_instead_of_a_gap_near_zero():
    r = score.aggregate([(0, 0, 0.0), (0, 1, 0.0), (0, 2, 0.08), (0, 3, 0.0)], num_positions=4, span_size=2)
    assert r["avg"] == pytest.approx(2.0) and r["gap"] == pytest.approx(4.0) and r["no_signal"]
    assert score.avg_gap(r["avg"], r["gap"]) == "2.0 / no signal"
    assert score.avg_gap(85.4, 6.1) == "85.4 / 6.1"
    table = report.table({"m": {"code_backward_1k": {**r, "task": "code"}}})
    assert "| m | 2.0 / no signal | 2.0 / no signal |" in table and "no signal: Avg below 5%" in table


def test_skipped_rows_do_not_count_and_overall_is_the_task_mean():
    rows = [{"completion": "f", "position_id": p, "set_id": 0} for p in range(4)]
    preds = ["f", "g", "f", "f"]
    r = score.score("code_backward_test", rows, skip=[1], predictions=preds, span_size=2)
    assert r["scored"] == 3 and r["skipped"] == 1 and r["avg"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="3 predictions for 4 probe rows"):
        score.score("code_backward_test", rows, [], preds[:3])
    assert score.overall([{"avg": 85.4, "gap": 6.1}, {"avg": 83.3, "gap": 18.7}, {"avg": 89.0, "gap": 16.8}]) == (
        pytest.approx({"avg": 85.9, "gap": 13.866666})
    )


def test_film_prediction_lines(tmp_path):
    path = tmp_path / "sample_code_backward_32k.jsonl"
    path.write_text('{"samples": [" The function is f."]}\n{"sample": "g"}\n\n')
    assert score.read_predictions(path) == [" The function is f.", "g"]
    path.write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="'samples' or 'sample'"):
        score.read_predictions(path)


# --- end to end ------------------------------------------------------------------------------------


def _eval_config(tmp_path, models, **probes):
    from in2.evaluation.config import EvalConfig
    from in2.recipes import from_dict
    from tests.conftest import MISTRAL

    data = {
        "tokenizer": MISTRAL,
        "probes": {
            "tasks": ["document", "code", "database"],
            "lengths": [512, 1024],
            "sets": 2,
            "span_size": 5,
            "positions_per_span": 2,
            "output_dir": str(tmp_path / "probes"),
            **probes,
        },
        "models": models,
        "output_dir": str(tmp_path / "results"),
    }
    cfg = from_dict(EvalConfig, data)
    cfg.validate()
    return cfg


def _http_model(url, cache, name="reader"):
    return {
        "name": name,
        "generator": {
            "backend": "openai",
            "model": "reader",
            "base_url": url,
            "concurrency": 4,
            "temperature": 0.0,
            "max_tokens": 128,
            "cache_dir": str(cache),
        },
    }


def test_eval_against_a_server_that_keeps_failing_ends_in_one_line(tmp_path, capsys):
    """Every answer a 500 after the client's retries: `in2 eval` stops with one line and exit 3 (requests
    failed, as `in2 synth` says it), no traceback; the answers are asked again on a rerun."""
    from in2.cli import main
    from tests.conftest import MISTRAL

    with CannedServer(chaos_rate=1.0, chaos_kinds=("500",)) as s:
        model = _http_model(s.url, tmp_path / "cache")
        model["generator"].update(max_retries=0, concurrency=1)
        recipe = {
            "tokenizer": MISTRAL,
            "probes": {"tasks": ["database"], "lengths": [512], "sets": 1, "span_size": 5, "positions_per_span": 1,
                       "output_dir": str(tmp_path / "probes")},
            "models": [model],
            "output_dir": str(tmp_path / "results"),
        }  # fmt: skip
        (tmp_path / "eval.yaml").write_text(yaml.safe_dump(recipe))
        code = main(["eval", "--config", str(tmp_path / "eval.yaml")])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("in2: error: ") and "requests failed" in last and "rerun" in last


@pytest.mark.parametrize("prompt_format", ["chat", "raw"])
def test_eval_over_http_gives_a_perfect_reader_full_marks(tmp_path, server, prompt_format):
    from in2.evaluation import suite

    cfg = _eval_config(tmp_path, [_http_model(server.url, tmp_path / "cache")], prompt_format=prompt_format)
    out = suite.evaluate(cfg)
    results = json.loads((out / "results.json").read_text())
    assert results["versions"]["in2"] == in2.__version__ and "transformers" in results["versions"]
    data = results["probing"]["models"]["reader"]
    assert set(data["probes"]) == {
        f"{t}_{n}" for t in ("document_bi", "code_backward", "database_forward") for n in ("512", "1k")
    }
    for name, r in data["probes"].items():
        assert r["avg"] == pytest.approx(100.0) and r["gap"] == pytest.approx(0.0), name
    assert data["all"]["1k"] == pytest.approx({"avg": 100.0, "gap": 0.0})
    endpoint = "/v1/chat/completions" if prompt_format == "chat" else "/v1/completions"
    assert set(server.paths) == {endpoint}
    if prompt_format == "raw":
        assert all(b["prompt"].startswith("[INST] Below is a context") for b in server.bodies)
    else:
        assert all(b["messages"][0]["content"].startswith("Below is a context") for b in server.bodies)
    assert "| reader | 100.0 / 0.0 |" in (out / "results.md").read_text()
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert "val_code_backward_1k.png" in plots and "heatmap_reader_database.png" in plots


def test_eval_resumes_after_the_last_written_prediction(tmp_path, server):
    from in2.evaluation import suite

    cfg = _eval_config(tmp_path, [_http_model(server.url, tmp_path / "cache")], tasks=["code"], lengths=[1024])
    suite.evaluate(cfg)
    sent = len(server.bodies)
    pred = tmp_path / "results" / "predictions" / "reader" / "sample_code_backward_1k.jsonl"
    lines = pred.read_text().splitlines()
    skipped = sum('"skipped": true' in ln for ln in lines)
    assert sent == len(lines) - skipped
    # a crash after 3 lines, the last one cut short, and no request cache: only the rest is asked again
    pred.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])
    cfg.models[0].generator.cache_dir = str(tmp_path / "fresh-cache")
    suite.evaluate(cfg)
    resent = len(server.bodies) - sent
    assert resent == len(lines) - 3 - sum('"skipped": true' in ln for ln in lines[3:])
    assert pred.read_text().splitlines() == lines
    suite.evaluate(cfg)  # complete: nothing is sent
    assert len(server.bodies) - sent == resent


def test_tiny_model_runs_locally_and_refreshes_its_card(tmp_path, tiny_model, dataset_folder, server, monkeypatch):
    """transformers backend on a trained (tiny, random) checkpoint; its card gets the results and plots.
    Rerun unchanged, nothing is loaded; with other weights at the same path, it is evaluated afresh."""
    from in2.evaluation import suite
    from in2.train import sft
    from tests.conftest import write_recipe

    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, max_steps=1, save_strategy="no")
    checkpoint = sft.train(*sft.parse(["--config", str(recipe)])[:3])
    local = {
        "name": "tiny",
        "generator": {
            "backend": "transformers",
            "model": str(checkpoint),
            "gguf_file": None,
            "dtype": "float32",
            "batch_size": 4,
            "temperature": 0.0,
            "max_tokens": 8,
            "cache_dir": str(tmp_path / "cache"),
        },
    }
    cfg = _eval_config(
        tmp_path,
        [local, _http_model(server.url, tmp_path / "cache")],
        tasks=["database"],
        lengths=[512],
        prompt_format="raw",
    )
    cfg.model_card = str(checkpoint)
    out = suite.evaluate(cfg)
    rows, _ = build.read(tmp_path / "probes", "database_forward_512")
    preds = score.read_predictions(out / "predictions" / "tiny" / "sample_database_forward_512.jsonl")
    assert len(preds) == len(rows)
    card = (checkpoint / "README.md").read_text()
    assert "| VaL database_forward_512 | Avg / Gap |" in card and "plots/val_database_forward_512.png" in card
    assert "| FILM-7B (paper) | 85.4 / 6.1 | 83.3 / 18.7 | 89.0 / 16.8 | 85.9 / 13.9 |" in card  # for reference
    assert "rows marked (paper) are published numbers" in card
    assert "| reader | 100.0 / 0.0 | 100.0 / 0.0 |" in card  # the summary compares every model evaluated
    assert (checkpoint / "plots" / "val_database_forward_512.png").is_file()
    results = json.loads((checkpoint / "eval_results.json").read_text())["results"]
    assert {r["model"] for r in results} == {"tiny"}

    from in2.llm.local_backend import LocalBackend

    loads, load = [], LocalBackend.__init__
    monkeypatch.setattr(LocalBackend, "__init__", lambda self, g: (loads.append(g.model), load(self, g))[-1])
    pred = out / "predictions" / "tiny" / "sample_database_forward_512.jsonl"
    first = pred.read_text()
    suite.evaluate(cfg)  # unchanged (its card and eval results rewritten beside it): nothing to compute
    assert loads == [] and pred.read_text() == first

    # retrained in place: other weights at the same path are loaded and answer every row again
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(checkpoint)).save_pretrained(checkpoint)
    suite.evaluate(cfg)
    assert loads == [str(checkpoint)] and pred.read_text() != first
    # ... and the numbers follow the new weights: the same as evaluating them with no history at all
    cfg.model_card, cfg.output_dir = None, str(tmp_path / "fresh")
    cfg.models[0].generator.cache_dir = str(tmp_path / "fresh-cache")
    suite.evaluate(cfg)
    assert (tmp_path / "fresh" / pred.relative_to(out)).read_text() == pred.read_text()
    swapped, fresh = (json.loads((d / "results.json").read_text()) for d in (out, tmp_path / "fresh"))
    assert swapped["probing"]["models"]["tiny"] == fresh["probing"]["models"]["tiny"]


def test_probe_score_cli_rescoring_film_format_files(tmp_path, capsys):
    from in2.cli import main

    probes, preds = tmp_path / "VaLProbing-32K", tmp_path / "FILM-7B"
    rows = [
        {
            "prompt": "p",
            "label": "Jalan Besar Stadium",
            "description": "stadium in Singapore",
            "position_id": p,
            "set_id": s,
        }
        for s in range(2)
        for p in range(4)
    ]
    build.write(probes, "database_forward_32k", ((r, i == 3) for i, r in enumerate(rows)))
    preds.mkdir()
    answers = ["jalan besar stadium", "no", "a stadium in singapore", "x"] * 2
    (preds / "sample_database_forward_32k.jsonl").write_text("".join(json.dumps({"sample": a}) + "\n" for a in answers))
    out = tmp_path / "scores.json"
    assert (
        main(
            [
                "probe",
                "score",
                "--probes",
                str(probes),
                "--predictions",
                str(preds),
                "--span-size",
                "2",
                "--model",
                "FILM-7B",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    # set 0: positions 0,1 -> 1,0 (0.5); 2 -> 1 (3 skipped); set 1: 0.5 and 0.5 -> spans 50 and 75
    r = json.loads(out.read_text())["FILM-7B"]["database_forward_32k"]
    assert r["spans"] == pytest.approx([50.0, 75.0]) and r["avg"] == pytest.approx(62.5)
    assert "| FILM-7B | 62.5 / 25.0 |" in capsys.readouterr().out
    # without --span-size: what the probe folder's manifest recorded, else FILM's 50
    base = ["probe", "score", "--probes", str(probes), "--predictions", str(preds), "--model", "FILM-7B"]
    (probes / "manifest.json").write_text(json.dumps({"spec": {"probes": {"span_size": 2}}}))
    assert main(base) == 0
    printed = capsys.readouterr().out
    assert "spans of 2 positions" in printed and "| FILM-7B | 62.5 / 25.0 |" in printed
    (probes / "manifest.json").unlink()
    assert main([*base, "--output", str(out)]) == 0
    assert "spans of 50 positions" in capsys.readouterr().out
    r = json.loads(out.read_text())["FILM-7B"]["database_forward_32k"]
    assert r["spans"] == [] and r["dropped"] == 7 and r["no_signal"]  # 4 positions: not one whole span


def test_prebuilt_film_layout_runs_unchanged(tmp_path, server, mistral_tokenizer, offline_pools):
    """A folder in FILM's released layout (as VaLProbing-32K ships) is run as is, not rebuilt."""
    from in2.evaluation import suite

    film = tmp_path / "VaLProbing-32K"
    rows, skipped = build.Builder("code", offline_pools["code"], mistral_tokenizer).build_set(1024, 0)
    build.write(
        film,
        "code_backward_32k",
        (
            ({k: r[k] for k in ("prompt", "completion", "position_id", "set_id")}, i in skipped)
            for i, r in enumerate(rows)
        ),
    )
    cfg = _eval_config(tmp_path, [_http_model(server.url, tmp_path / "cache")], prebuilt=str(film), prompt_format="raw")
    out = suite.evaluate(cfg)
    r = json.loads((out / "results.json").read_text())["probing"]["models"]["reader"]["probes"]["code_backward_32k"]
    assert r["avg"] == pytest.approx(100.0) and r["scored"] == len(rows) - len(skipped)
    assert not (tmp_path / "probes").exists()


def test_eval_recipes_load():
    from in2.evaluation.config import EvalConfig
    from in2.recipes import load_config

    root = Path(__file__).resolve().parents[1] / "recipes"
    demo = load_config(EvalConfig, root / "demo" / "eval.yaml")
    assert demo.model_card == "checkpoints/in2-demo" and len(demo.models) == 2
    film = load_config(EvalConfig, root / "film-7b" / "eval.yaml")
    assert film.probes.lengths == [32768] and film.probes.sets == 4 and film.probes.span_size == 50
    assert all(m.generator.max_tokens == 128 and m.generator.temperature == 0 for m in film.models)
    assert film.suites == ["probing", "longbench", "ruler", "short"] and film.base == "Mistral-7B-Instruct-v0.2"
    from in2.errors import ConfigError

    with pytest.raises(ConfigError, match="probes.prompt_format"):
        load_config(EvalConfig, root / "demo" / "eval.yaml", ["probes.prompt_format=plain"])


def test_probing_killed_mid_run_resumes_without_asking_twice(tmp_path):
    """kill -9 an `in2 eval` at seeded random points; the finished run equals an uninterrupted one.
    Concurrency 1: with more, answers still in flight at the kill are lost and asked again."""

    def recipe(url, name):
        cfg = {
            "tokenizer": {
                "name_or_path": "pkg://mistral_common/data/tokenizer.model.v1",
                "gguf_file": None,
                "chat_template": "mistral-instruct",
            },
            "probes": {
                "tasks": ["document", "database"],
                "lengths": [1024],
                "sets": 2,
                "span_size": 5,
                "output_dir": str(tmp_path / f"{name}-probes"),
            },
            "models": [
                {
                    "name": "reader",
                    "generator": {
                        "backend": "openai",
                        "model": "m",
                        "base_url": url,
                        "concurrency": 1,
                        "temperature": 0.0,
                        "max_tokens": 64,
                        "cache_dir": str(tmp_path / f"{name}-cache"),
                    },
                }
            ],
            "output_dir": str(tmp_path / name),
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def cli(path):
        return in2_process("eval", "--config", str(path), OPENAI_API_KEY="EMPTY")

    with CannedServer() as s:
        assert cli(recipe(s.url, "ref")).wait(timeout=300) == 0
        total = sum(s.answered.values())
    reference = json.loads((tmp_path / "ref" / "results.json").read_text())["probing"]["models"]["reader"]
    with CannedServer() as s:
        path = recipe(s.url, "crash")
        s.kill_at(lambda: cli(path), sorted(random.Random(3).sample(range(1, total), 2)))  # seeded random points
        proc = cli(path)
        assert proc.wait(timeout=300) == 0, proc.stdout.read()
    assert max(s.answered.values()) == 1 and sum(s.answered.values()) == total
    result = json.loads((tmp_path / "crash" / "results.json").read_text())["probing"]["models"]["reader"]
    assert {n: r["avg"] for n, r in result["probes"].items()} == {n: r["avg"] for n, r in reference["probes"].items()}


def test_film_pools_download_over_http_once(tmp_path, file_server):
    """The `film` pool source fetches the three files over HTTP (a local server with FILM's files here),
    then reads them from disk; an unreachable source is one clear error."""
    if not FILM.is_dir():
        pytest.skip("FILM's pools live in the shared folder beside the checkout")
    served, url, asked = file_server
    digests = {}
    for name in pools.FILM_FILES.values():  # a 50-line slice of each of FILM's real files, at a revision
        lines = (FILM / "pieces" / name).read_text(encoding="utf-8").splitlines()[:50]
        (served / "abc123").mkdir(exist_ok=True)
        (served / "abc123" / name).write_text("\n".join(lines) + "\n")
        digests[name] = hashlib.sha256((served / "abc123" / name).read_bytes()).hexdigest()
    folder = pools.download_film(tmp_path / "cache", url + "{revision}/", "abc123", digests)
    assert len(asked) == 3 and not list(folder.glob("*.partial"))
    pools.download_film(tmp_path / "cache", url + "{revision}/", "abc123", digests)  # there: nothing asked
    assert len(asked) == 3
    db = pools.load_film(folder, "database")
    assert len(db) == 50 and set(db[0]) == {"id", "label", "description"}
    with pytest.raises(FileNotFoundError, match=r"cannot download FILM's pool .*set probes.pools"):
        pools.download_film(tmp_path / "other", url + "missing/", "abc123", digests)
    # the slices are not FILM's files: with FILM's own digests the download is refused, naming the file
    with pytest.raises(
        ConfigError,
        match=r"probes.pools: .*document_sentences.jsonl .*not 9970b18b.* \(FILM's file at microsoft/FILM@abc123",
    ):
        pools.download_film(tmp_path / "third", url + "{revision}/", "abc123")


@pytest.mark.skipif(not FILM.is_dir(), reason="FILM's pools live in the shared folder beside the checkout")
def test_film_pools_are_pinned_to_a_commit_and_their_sha256(tmp_path):
    """The digests in2 checks are those of FILM's files (the stored copy at FILM_REVISION); a changed byte is
    not FILM's pool any more, and the build says which it read."""
    from in2.evaluation.probing.build import load_pool

    assert re.fullmatch(r"[0-9a-f]{40}", pools.FILM_REVISION) and "{revision}" in pools.FILM_URL
    for name in pools.FILM_FILES.values():
        assert pools.is_film(FILM / "pieces" / name)
    _, described = load_pool("database", str(FILM / "pieces"), "builtin:pydoc", 0)
    assert "FILM's released pool (microsoft/FILM@134c03b, sha256 checked" in described
    copy = tmp_path / "pieces"
    copy.mkdir()
    raw = (FILM / "pieces" / "database_entities.jsonl").read_bytes()
    (copy / "database_entities.jsonl").write_bytes(raw.replace(b"Q41713206", b"Q41713207"))
    assert not pools.is_film(copy / "database_entities.jsonl")
    _, described = load_pool("database", str(copy), "builtin:pydoc", 0)
    assert described.startswith("a pool in FILM's layout") and "not FILM's file" in described


def test_a_pool_too_short_for_the_length_is_flagged(tmp_path, caplog):
    """A context cannot be longer than its whole pool: the build says so instead of naming a 1K file after
    a shorter context (in2's offline document and database pools fill ~40K tokens, FILM's 128K)."""
    from in2.evaluation.probing import build

    pieces = tmp_path / "pieces"
    pieces.mkdir()
    rows = [
        {"sentence": f"Sentence number {i} is about rivers and stones.", "piece": f"number {i} is"} for i in range(6)
    ]
    (pieces / pools.FILM_FILES["document"]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _eval_config(tmp_path, [], tasks=["document"], lengths=[1024], sets=1, pools=str(pieces))
    out, names = build.build_all(cfg)
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert files["document_bi_1k"]["pool_too_short"] and files["document_bi_1k"]["items_per_set"] == 5  # whole spans
    assert "document_bi_1k: the whole document pool (6 items) is shorter than 1024 tokens" in caplog.text


def test_reserved_tokens_keep_room_for_bos_and_the_answer(tmp_path, mistral_tokenizer):
    """A probe named for a window of L tokens leaves `reserved_tokens` of it free (FILM-7B's recipe: BOS and
    128 new tokens), so the longest prompt plus the answer still fits a server started at L."""
    from in2.evaluation.probing import build

    pieces = tmp_path / "pieces"
    pieces.mkdir()
    rows = [
        {
            "function_name": f"fn_{i}",
            "function_define": f"    x = {i}\n    y = x * {i}\n    return y + {i}",
            "piece": f"x * {i}",
        }
        for i in range(200)
    ]
    (pieces / pools.FILM_FILES["code"]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _eval_config(tmp_path, [], tasks=["code"], lengths=[512], sets=1, span_size=2, reserved_tokens=129)
    cfg.probes.pools = str(pieces)
    out, names = build.build_all(cfg)
    assert names == ["code_backward_512"]
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert files["code_backward_512"]["prompt_tokens_at_most"] == 512 - 129

    def longest(folder):
        prompts = [json.loads(line)["prompt"] for line in (folder / "code_backward_512.jsonl").read_text().splitlines()]
        return max(len(ids) for ids in mistral_tokenizer(prompts, add_special_tokens=False)["input_ids"])

    unreserved = _eval_config(tmp_path, [], tasks=["code"], lengths=[512], sets=1, span_size=2)
    unreserved.probes.output_dir, unreserved.probes.pools = str(tmp_path / "unreserved"), str(pieces)
    assert longest(out) <= 512 - 129 < longest(build.build_all(unreserved)[0]) <= 512
    from in2.errors import ConfigError

    with pytest.raises(ConfigError, match="probes.reserved_tokens"):
        _eval_config(tmp_path, [], lengths=[128], reserved_tokens=100)
