"""End to end: corpus -> QA over real HTTP -> long contexts -> dataset folder -> load_dataset -> SFT."""

import json
import random
import subprocess
from pathlib import Path

import pytest
import yaml

from in2.cli import main
from tests.conftest import MISTRAL
from tests.openai_server import TRANSIENT, CannedServer, canned_generator, in2_process

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-in2-test-secret-7f3a9c"


def write_config(tmp_path: Path, url: str, name: str = "run", **top) -> Path:
    cfg = {
        "corpus": {"source": "builtin:pydoc", "filler_pool_texts": 200},
        "tokenizer": MISTRAL,
        "generator": canned_generator(
            url,
            cache_dir=str(tmp_path / f"{name}-cache"),
            concurrency=1,
            max_retries=2,
            api_key_env="IN2_TEST_API_KEY",
        ),
        "context": {"min_context_tokens": 512, "max_context_tokens": 1536, "num_length_buckets": 4, "max_length": 1792},
        "mixture": {"fine_grained": 10, "integration": 3, "short": 3, "general": 4, "validation_rows": 2},
        "general": {"source": "builtin:instructions", "instruction_field": "instruction", "response_field": "response"},
        "output_dir": str(tmp_path / name),
        **top,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def manifest(folder) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text())


@pytest.fixture
def env_key(monkeypatch):
    monkeypatch.setenv("IN2_TEST_API_KEY", SECRET)


def test_synth_builds_a_loadable_dataset_that_sftrainer_accepts(tmp_path, env_key, capsys, tiny_model):
    from datasets import load_dataset

    with CannedServer() as s:
        assert main(["synth", "--config", str(write_config(tmp_path, s.url))]) == 0
    out = tmp_path / "run"
    printed = capsys.readouterr().out
    assert f'load_dataset("{out}")' in printed
    m = manifest(out)
    assert m["counts"]["rows"] == {"fine_grained": 10, "integration": 3, "short": 3, "general": 4}
    assert m["splits"] == {"train": 18, "validation": 2}
    assert set(m["prompts"]) == {"fine_grained.txt", "integration.txt", "film_context.txt", "film_no_context.txt"}
    assert m["usage"]["requests_sent"] == sum(s.answered.values()) > 0
    assert m["token_accounting"]["max_abs_error_tokens"] <= 8
    files = sorted(str(p.relative_to(out / "data")) for p in (out / "data").rglob("*.parquet"))
    assert all(f.split("/")[0] in m["counts"]["rows"] and f.endswith("-00000-of-00001.parquet") for f in files)
    assert {f.split("/")[0] for f in files} == {"fine_grained", "integration", "short", "general"}
    for f in out.rglob("*"):  # no secret anywhere in the artifact
        assert not f.is_file() or SECRET not in f.read_text(errors="ignore")
    assert SECRET not in printed

    ds = load_dataset(str(out))
    assert ds["train"].num_rows == 18 and ds["validation"].num_rows == 2
    for part, n in m["counts"]["rows"].items():
        one = load_dataset(str(out), part)
        assert sum(d.num_rows for d in one.values()) == n and {t for d in one.values() for t in d["type"]} == {part}
    long = [r for r in ds["train"] if r["type"] in ("fine_grained", "integration")]
    assert all(512 - 300 < r["context_tokens"] <= 1536 and r["key_positions"] for r in long)
    row = long[0]
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].startswith("Below is a context")
    assert row["completion"][0]["role"] == "assistant"

    # One real SFTTrainer step on the tiny Mistral of conftest, fed the rows as they are.
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_steps=1,
        per_device_train_batch_size=2,
        bf16=False,
        activation_checkpointing=False,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        max_length=1792,
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds["train"], processing_class=tok)
    result = trainer.train()
    assert result.global_step == 1 and result.training_loss > 0


def test_card_header_parses_and_the_body_reports_the_build(tmp_path, env_key):
    from huggingface_hub import DatasetCard

    with CannedServer() as s:
        assert main(["synth", "--config", str(write_config(tmp_path, s.url)), "release.license=odc-by"]) == 0
    out = tmp_path / "run"
    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "odc-by" and data["language"] == ["en"] and data["size_categories"] == ["n<1K"]
    assert {"question-answering", "text-generation"} <= set(data["task_categories"]) and "in2" in data["tags"]
    assert [c["config_name"] for c in data["configs"]] == ["all", "fine_grained", "integration", "short", "general"]
    m = manifest(out)
    body = card.text
    for plot in ("plots/rows_per_part.png", "plots/context_lengths.png", "plots/key_positions.png"):
        assert f"]({plot})" in body and (out / plot).stat().st_size > 1000
    assert m["content_hash"] in body and "canned" in body and "allenai" not in body
    assert f"| `fine_grained` | {m['counts']['rows']['fine_grained']} |" in body
    assert "not** decontaminated" in body and "in2 synth --config synth_config.yaml" in body
    assert "An, Shengnan" in body and "https://arxiv.org/abs/2404.16811" in body and "github.com/microsoft/FILM" in body
    # only the licenses of what was used: the pydoc corpus and in2's instructions, not C4 or OpenOrca
    assert "`builtin:pydoc`, PSF License" in body and "`builtin:instructions`, Apache-2.0" in body
    assert "ODC-BY" not in body.split("---", 2)[2] and "OpenOrca" not in body
    rebuilt = yaml.safe_load((out / "synth_config.yaml").read_text())
    assert rebuilt["mixture"] == m["config"]["mixture"] and "shard_index" not in rebuilt


def test_rerun_sends_nothing_and_gives_the_same_dataset(tmp_path, env_key):
    with CannedServer() as s:
        cfg = write_config(tmp_path, s.url)
        assert main(["synth", "--config", str(cfg)]) == 0
        first, sent = manifest(tmp_path / "run"), sum(s.answered.values())
        assert main(["synth", "--config", str(cfg)]) == 0
    again = manifest(tmp_path / "run")
    assert sum(s.answered.values()) == sent and again["usage"]["requests_sent"] == 0
    assert again["content_hash"] == first["content_hash"]


@pytest.mark.parametrize("limit", [["--max-requests", "7"], ["--max-cost-usd", "0.0005"]])
def test_budget_stops_cleanly_and_the_rerun_pays_for_nothing_twice(tmp_path, env_key, capsys, limit):
    prices = {"price_input_per_1m": 1.0, "price_output_per_1m": 1.0}
    with CannedServer() as s:
        reference = write_config(tmp_path, s.url, name="whole")
        data = yaml.safe_load(reference.read_text())
        data["generator"].update(prices)
        reference.write_text(yaml.safe_dump(data))
        assert main(["synth", "--config", str(reference)]) == 0
        whole = sum(s.answered.values())
    with CannedServer() as s:
        cfg = write_config(tmp_path, s.url)
        data = yaml.safe_load(cfg.read_text())
        data["generator"].update(prices)
        cfg.write_text(yaml.safe_dump(data))
        assert main(["synth", "--config", str(cfg), *limit]) == 4
        stopped = sum(s.answered.values())
        assert "stopped" in capsys.readouterr().err and not (tmp_path / "run").exists()
        assert 0 < stopped < whole
        if limit[0] == "--max-requests":
            assert stopped == 7
        assert main(["synth", "--config", str(cfg)]) == 0
        assert sum(s.answered.values()) == whole  # nothing answered before the stop is sent again
        assert max(s.answered.values()) == 1
    assert manifest(tmp_path / "run")["content_hash"] == manifest(tmp_path / "whole")["content_hash"]


def test_thirty_percent_faults_lose_nothing_and_pay_nothing_twice(tmp_path, env_key):
    """429s, 500s, hangs past the timeout, broken JSON, empty replies and dropped connections on 30% of
    attempts: every fault is retried away, so the run builds the same dataset as a clean run, and no
    request is answered twice (an empty reply is never cached as an answer)."""
    mixture = {"fine_grained": 60, "integration": 4, "short": 6, "general": 4, "validation_rows": 2}
    with CannedServer() as s:
        clean = write_config(tmp_path, s.url, name="clean", mixture=mixture)
        assert main(["synth", "--config", str(clean)]) == 0
    reference = manifest(tmp_path / "clean")
    with CannedServer(chaos_rate=0.3, hang_s=1.5, chaos_kinds=TRANSIENT) as s:
        cfg = write_config(tmp_path, s.url, mixture=mixture)
        data = yaml.safe_load(cfg.read_text())
        data["generator"].update({"concurrency": 4, "max_retries": 6, "timeout_s": 0.5})
        cfg.write_text(yaml.safe_dump(data))
        assert main(["synth", "--config", str(cfg)]) == 0
        assert set(s.chaos) == set(TRANSIENT)
        assert max(s.answered.values()) == 1  # no request answered twice
        m = manifest(tmp_path / "run")
        qa = m["counts"]["qa"]
        rows = m["counts"]["rows"]
        kept = rows["fine_grained"] + rows["integration"] + rows["short"]
        assert qa["planned"] == kept + qa.get("surplus", 0) + sum(m["rejected"].values())
        assert m["rejected"] == reference["rejected"]  # no fault reached parsing: all were retried away
        assert m["content_hash"] == reference["content_hash"]
        for key in ("requests_planned", "requests_sent", "requests_deduplicated", "prompt_tokens"):
            assert m["usage"][key] == reference["usage"][key], key
        answered = sum(s.answered.values())
        assert main(["synth", "--config", str(cfg)]) == 0  # a rerun asks nothing again
        assert sum(s.answered.values()) == answered
    again = manifest(tmp_path / "run")
    assert again["content_hash"] == reference["content_hash"]
    # the same usage whether answers came fresh or from the cache; one accounting of every request
    u, fresh = again["usage"], reference["usage"]
    assert (u["requests_sent"], u["requests_cached"]) == (0, fresh["requests_sent"])
    for key in ("requests_planned", "requests_deduplicated", "prompt_tokens", "completion_tokens"):
        assert u[key] == fresh[key], key
    assert u["requests_planned"] == u["requests_cached"] + u["requests_deduplicated"] + sum(
        u["requests_failed"].values()
    )


def test_a_refusal_is_an_answer_counted_as_a_reject(tmp_path, env_key):
    with CannedServer(chaos_rate=0.3, chaos_kinds=("refusal",)) as s:
        assert main(["synth", "--config", str(write_config(tmp_path, s.url))]) == 0
        assert s.chaos["refusal"] >= 1 and max(s.answered.values()) == 1  # cached: not asked again
    assert manifest(tmp_path / "run")["rejected"]["refusal"] >= 1


def test_a_dirty_corpus_is_counted_not_fatal(tmp_path, env_key):
    """Empty texts, non-UTF-8 bytes, broken JSON lines, missing and non-string text fields, one huge
    line: each is skipped and counted by reason, and the run still builds its dataset."""
    from pydoc_data import topics

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good = [" ".join(topics.topics[k].split()) for k in sorted(topics.topics)[:60]]
    (corpus / "good.jsonl").write_text("".join(json.dumps({"text": t.replace(". ", ".\n")}) + "\n" for t in good))
    (corpus / "binary.txt").write_bytes(b"\xff\xfe\x00\x81 not text")
    (corpus / "dirty.jsonl").write_bytes(
        b'{"text": ""}\n{"body": "no text field"}\n{"text": 42}\n[1, 2]\n{"text": "broken\n'
        + b'{"text": "\xff\xfe"}\n'
        + json.dumps({"text": " ".join(["word"] * 6000)}).encode()
        + b"\n"
    )
    with CannedServer() as s:
        cfg = write_config(
            tmp_path, s.url, corpus={"source": str(corpus), "filler_pool_texts": 100, "max_segment_tokens": 4096}
        )
        assert main(["synth", "--config", str(cfg)]) == 0
    counts = manifest(tmp_path / "run")["counts"]["corpus"]
    assert counts["skipped_not_utf8"] == 1  # binary.txt
    assert counts["skipped_bad_json_line"] == 3  # [1, 2], the cut line, the non-UTF-8 line
    assert counts["skipped_empty"] == 1 and counts["skipped_not_text"] == 2  # "" ; no text field and 42
    assert counts["skipped_segment_too_long"] == 1  # one line of 6,000 words
    assert manifest(tmp_path / "run")["counts"]["rows"]["fine_grained"] == 10


def test_a_corpus_that_runs_out_is_reported_not_silent(tmp_path, env_key, capsys):
    """Fewer usable texts than the mixture needs: the run finishes with what it could build, and the
    shortfall is in the manifest, on stderr and in the card."""
    corpus = tmp_path / "tiny.jsonl"
    corpus.write_text(json.dumps({"text": ""}) + "\n" + json.dumps({"text": "Too short to segment."}) + "\n")
    with CannedServer() as s:
        assert main(["synth", "--config", str(write_config(tmp_path, s.url)), f"corpus.source={corpus}"]) == 0
    m = manifest(tmp_path / "run")
    assert m["requested"] == {"fine_grained": 10, "integration": 3, "short": 3, "general": 4}
    assert m["shortfall"] == {"fine_grained": 10, "integration": 3, "short": 3}
    c = m["counts"]["corpus"]
    assert (c["texts_read"], c["skipped_empty"], c["skipped_too_short"], c["segments"]) == (2, 1, 1, 0)
    err = capsys.readouterr().err
    assert "rows missing: fine_grained 10 of 10, integration 3 of 3, short 3 of 3" in err
    assert (
        "`fine_grained` 10 rows, `integration` 3 rows, `short` 3 rows" in (tmp_path / "run" / "README.md").read_text()
    )


@pytest.mark.parametrize("fault", ["wrong_key", "unreachable"])
def test_a_wrong_key_or_dead_endpoint_ends_the_cli_with_one_clear_line(tmp_path, env_key, capsys, fault):
    with CannedServer(status_for_all=401) as s:
        url = s.url if fault == "wrong_key" else "http://127.0.0.1:9/v1"
        cfg = write_config(tmp_path, url)
        assert main(["synth", "--config", str(cfg), "generator.max_retries=0"]) == 3
    out, err = capsys.readouterr()
    expected = {
        "wrong_key": f"in2: error: {url} refused the key from $IN2_TEST_API_KEY (HTTP 401)",
        "unreachable": f"in2: error: cannot reach {url}: 8 requests in a row failed to connect",
    }[fault]
    assert expected in err
    assert "rerun to resume" in err and "Traceback" not in out + err and SECRET not in out + err
    assert not (tmp_path / "run").exists()


def _cli(config: Path) -> subprocess.Popen:
    return in2_process("synth", "--config", str(config), IN2_TEST_API_KEY=SECRET)


def test_killed_run_resumes_to_the_same_dataset_without_resending(tmp_path):
    with CannedServer() as s:
        ref = write_config(tmp_path, s.url, name="ref")
        assert _cli(ref).wait(timeout=300) == 0
        reference = manifest(tmp_path / "ref")["content_hash"]
        total = sum(s.answered.values())

    with CannedServer() as s:
        cfg = write_config(tmp_path, s.url, name="crash")
        s.kill_at(lambda: _cli(cfg), sorted(random.Random(7).sample(range(1, total), 3)))  # seeded random points
        assert not (tmp_path / "crash").exists()
        proc = _cli(cfg)
        assert proc.wait(timeout=300) == 0, proc.stdout.read()
    assert manifest(tmp_path / "crash")["content_hash"] == reference
    assert max(s.answered.values()) == 1  # no answered request was sent twice
    assert sum(s.answered.values()) == total


def test_shards_merge_into_one_folder(tmp_path, env_key):
    evalset = tmp_path / "eval.jsonl"
    evalset.write_text(json.dumps({"context": "one two three four five six seven eight nine ten eleven"}) + "\n")
    with CannedServer() as s:
        cfg = write_config(
            tmp_path, s.url, decontam={"ngram": 10, "sources": [{"source": str(evalset), "fields": ["context"]}]}
        )
        for i in range(2):
            assert main(["synth", "--config", str(cfg), "--num-shards", "2", "--shard-index", str(i)]) == 0
    assert main(["merge", "--config", str(cfg)]) == 0
    m = manifest(tmp_path / "run")
    assert m["counts"]["rows"] == m["requested"] == {"fine_grained": 10, "integration": 3, "short": 3, "general": 4}
    assert m["shortfall"] == {}  # the whole job's request, not one shard's share
    assert m["splits"]["train"] + m["splits"]["validation"] == 20
    # per-job facts are copied from the shards, not summed over them
    assert m["decontamination"] == {"ngram": 10, "eval_sources": [str(evalset)], "eval_texts": 1, "eval_ngrams": 2}
    assert "a 10-word n-gram" in (tmp_path / "run" / "README.md").read_text()
    ids = [
        r
        for sh in (tmp_path / "run.shards").iterdir()
        for r in __import__("pyarrow.parquet").parquet.read_table(sh / "rows.parquet").column("id").to_pylist()
    ]
    assert len(ids) == len(set(ids)) == 20


def test_merge_refuses_missing_shards(tmp_path, env_key, capsys):
    with CannedServer() as s:
        cfg = write_config(tmp_path, s.url)
        assert main(["synth", "--config", str(cfg), "--num-shards", "3", "--shard-index", "1"]) == 0
    assert main(["merge", "--config", str(cfg)]) == 2
    assert "shards [0, 2] of 3 are missing" in capsys.readouterr().err


def test_film_recipe_dry_run_offline_on_local_text(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    from pydoc_data import topics

    for i, (_name, text) in enumerate(sorted(topics.topics.items())[:40]):
        (corpus / f"{i:03d}.txt").write_text(text)
    args = [
        "synth",
        "--config",
        str(ROOT / "recipes/film-7b/in2_data.yaml"),
        "--dry-run",
        f"corpus.source={corpus}",
        f"generator.cache_dir={tmp_path / 'cache'}",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    report = json.loads(out[: out.rindex("}") + 1])
    # the paper's QA rows x qa.oversample: with a 10% reject budget, 1.15 x 0.9 > 1, so one wave
    assert report["requests"] == round(1_550_000 * 1.15) and report["expected_waves"] == 1
    assert 0 < report["sampled_requests"] <= 40 and "warning" in report  # 40 texts cannot fill the sample
    assert 200 * report["requests"] < report["prompt_tokens"] < 2000 * report["requests"]  # scaled from the sample
    assert report["estimated_cost_usd_at_most"] > 10_000 and report["sampled_already_cached"] == 0
    assert "nothing was sent" in out
    # a 30% reject budget: each wave plans 1.15 x what is missing and keeps 70% of it, so the waves
    # add up to about 1.15 / (1.15 x 0.7) = 1.43 requests per row
    assert main([*args, "qa.expected_reject_rate=0.3"]) == 0
    out = capsys.readouterr().out
    more = json.loads(out[: out.rindex("}") + 1])
    assert more["expected_waves"] >= 5 and more["requests_first_wave"] == report["requests"]
    assert more["requests"] == pytest.approx(1_550_000 / 0.7, rel=0.01)


def test_dry_run_predicts_the_requests_the_run_sends(tmp_path, env_key, capsys):
    """Prefill: one request per field (2; 3 for integration); the estimate matches what the run sends."""
    with CannedServer() as s:
        cfg = write_config(tmp_path, s.url)
        overrides = ["generator.prefill=true", "qa.expected_reject_rate=0.0"]
        assert main(["synth", "--config", str(cfg), "--dry-run", *overrides]) == 0
        out = capsys.readouterr().out
        report = json.loads(out[: out.rindex("}") + 1])
        assert report["requests_per_item"]["fine_grained"] == 2 and report["requests_per_item"]["integration"] == 3
        assert sum(s.answered.values()) == 0  # nothing was sent
        assert main(["synth", "--config", str(cfg), *overrides]) == 0
    usage = manifest(tmp_path / "run")["usage"]
    assert report["requests"] == usage["requests_planned"], (report, usage)  # no rejects: one wave, exactly
    # what was sent: planned less the identical requests answered once (repeated passages of the corpus)
    assert usage["requests_sent"] + usage["requests_deduplicated"] == usage["requests_planned"]
    assert abs(report["requests"] - usage["requests_sent"]) <= 0.1 * usage["requests_sent"]


def test_bad_corpus_field_is_a_clear_error(tmp_path, env_key, capsys):
    data = tmp_path / "c.jsonl"
    data.write_text(json.dumps({"body": "x"}) + "\n")
    with CannedServer() as s:
        cfg = write_config(tmp_path, s.url)
        assert main(["synth", "--config", str(cfg), f"corpus.source={data}"]) == 2
    assert "field 'text' not found" in capsys.readouterr().err


def test_a_second_synth_on_a_live_runs_answer_cache_stops_before_asking_anything(tmp_path, env_key, capsys):
    """Two runs on one generator.cache_dir would ask, and pay, for the same requests twice: the second stops
    with one line naming the field and the live run, before a request is sent; `--batch-cancel` too."""
    from in2.files import folder_lock

    with CannedServer() as s:
        cfg = write_config(tmp_path, s.url)
        with folder_lock(tmp_path / "run-cache", "in2 synth (shard 0 of 1)"):
            assert main(["synth", "--config", str(cfg)]) == 2
            backend = ["generator.backend=openai_batch", "--batch-cancel"]
            assert main(["synth", "--config", str(cfg), *backend]) == 2
        assert not s.bodies and not s.batches
    err = capsys.readouterr().err
    assert err.count(f"generator.cache_dir: {tmp_path / 'run-cache'} is in use by in2 synth (shard 0 of 1) (pid ") == 2


def test_contaminated_texts_are_neither_sources_nor_fillers(tmp_path, env_key):
    from pydoc_data import topics

    from in2.synth.config import CorpusConfig
    from in2.synth.corpus import iter_texts

    texts = list(iter_texts(CorpusConfig(source="builtin:pydoc")))
    planted = texts[:30]  # each eval row quotes 12 words of one corpus text
    evalset = tmp_path / "eval.jsonl"
    evalset.write_text("".join(json.dumps({"context": " ".join(t.text.split()[5:17])}) + "\n" for t in planted))
    for t in planted:  # the corpus really is the stdlib's pydoc text, each text from the topic its id names
        topic = topics.topics[t.id.split("/")[1]]
        assert t.id.startswith("pydoc/") and set(t.text.split()) <= set(topic.split()), t.id
    with CannedServer() as s:
        cfg = write_config(
            tmp_path,
            s.url,
            decontam={"ngram": 10, "sources": [{"source": str(evalset), "split": "test", "fields": ["context"]}]},
        )
        assert main(["synth", "--config", str(cfg)]) == 0
    # Independent expectation: plain tuples of lower-cased words, no hashing.
    import re

    def grams(text):
        w = re.findall(r"\w+", text.lower())
        return {tuple(w[i : i + 10]) for i in range(len(w) - 9)}

    banned = set().union(*(grams(" ".join(t.text.split()[5:17])) for t in planted))
    expected = {t.id for t in texts if grams(t.text) & banned}
    assert len(expected & {t.id for t in planted}) >= 20  # quotes of mostly symbols have < 10 words
    m = manifest(tmp_path / "run")
    assert m["counts"]["corpus"]["skipped_contaminated"] == len(expected)
    assert m["decontamination"]["eval_texts"] == 30 and m["decontamination"]["eval_sources"] == [str(evalset)]
    assert f"{len(expected)} texts dropped" in (tmp_path / "run" / "README.md").read_text()
    from datasets import load_dataset

    used = {i for split in load_dataset(str(tmp_path / "run")).values() for ids in split["source_ids"] for i in ids}
    assert used and not used & expected


def test_failed_requests_are_asked_again_not_replaced_by_new_texts(tmp_path, env_key, capsys):
    """Which rows exist must not depend on transient errors: an item whose request failed after the client's
    retries is asked again (not replaced by a new text); one that keeps failing stops the run, and the rerun
    builds the same set as a run that met no error."""
    with CannedServer() as s:
        assert main(["synth", "--config", str(write_config(tmp_path, s.url, name="clean"))]) == 0
    reference = manifest(tmp_path / "clean")
    lenient = ["generator.max_retries=0", "generator.max_errors_in_a_row=100000", "generator.max_failure_rate=1"]
    with CannedServer(faults={1: 500}) as s:  # every request's first attempt fails
        assert main(["synth", "--config", str(write_config(tmp_path, s.url)), *lenient]) == 0
    m = manifest(tmp_path / "run")
    assert m["rejected"] == reference["rejected"] and m["content_hash"] == reference["content_hash"]
    assert m["counts"]["qa"]["planned"] == reference["counts"]["qa"]["planned"]
    with CannedServer(faults={1: 500, 2: 500, 3: 500}) as s:  # three attempts fail: one, then two rounds again
        cfg = write_config(tmp_path, s.url, name="stuck")
        assert main(["synth", "--config", str(cfg), *lenient]) == 3
        assert "requests still failed after 2 more rounds of retries (http_500 x" in capsys.readouterr().err
        assert not (tmp_path / "stuck").exists()
        assert main(["synth", "--config", str(cfg), *lenient]) == 0
        assert max(s.answered.values()) == 1
    assert manifest(tmp_path / "stuck")["content_hash"] == reference["content_hash"]


def test_film_recipe_decontaminates_against_longbench_without_its_loading_script(tmp_path, monkeypatch):
    """datasets refuses THUDM/LongBench's loading script: the FILM-7B recipe reads LongBench's data.zip (as
    `in2 eval` does; here already unpacked in in2's cache) and each shard records the commit it read."""
    from in2.assets import loading
    from in2.errors import ConfigError
    from in2.recipes import load_config
    from in2.synth import decontam
    from in2.synth.config import SynthConfig

    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / ".cache/in2/longbench/THUDM--LongBench/data"
    folder.mkdir(parents=True)
    passage = "the quick brown fox jumps over the lazy dog near the old river bank at noon"
    cfg = load_config(SynthConfig, ROOT / "recipes/film-7b/in2_data.yaml")
    longbench = [s for s in cfg.decontam.sources if s.source == "THUDM/LongBench"]
    assert len(longbench) == 9
    for s in longbench:
        row = {"context": f"{s.name}: {passage}", "input": "q", "answers": ["a"]}
        (folder / f"{s.name}.jsonl").write_text(json.dumps(row) + "\n")
    cfg.decontam.sources = longbench
    d = decontam.build(cfg.decontam)
    assert d.stats["eval_texts"] == 9 * 3 and d.contaminated(f"It said {passage} and left.")
    with pytest.raises(ConfigError, match="loaded through a script, which datasets no longer runs"):
        with loading("decontam.sources[3]", "'THUDM/LongBench'"):
            raise RuntimeError("Dataset scripts are no longer supported, but found LongBench.py")


def test_the_jobs_first_shard_pins_each_hub_sources_commit_for_the_others(tmp_path, monkeypatch):
    """A Hub dataset that gets a new commit between two shards' starts: the later shard reads the commit the
    first one pinned in the job's folder, so merge gets shards of one evaluation set; a source with its own
    `revision` is never pinned. (`resolved` is where in2 asks the Hub for the latest commit; here the Hub's
    answer changes between the shards. The data is in in2's cache as `in2 eval` unpacks it.)"""
    from in2.synth import decontam
    from in2.synth.config import DecontamConfig, EvalSourceConfig

    monkeypatch.setenv("HOME", str(tmp_path))
    for commit in ("c0ffee1", "beef002"):
        folder = tmp_path / f".cache/in2/longbench/THUDM--LongBench@{commit}/data"
        folder.mkdir(parents=True)
        (folder / "qasper.jsonl").write_text(json.dumps({"context": f"text of commit {commit} " * 3}) + "\n")
    sources = [EvalSourceConfig(source="THUDM/LongBench", archive="data.zip", name="qasper", fields=["context"])]
    cfg = DecontamConfig(ngram=3, sources=sources)
    pins = tmp_path / "data" / "in2-film-7b.revisions"
    read = []
    for latest in ("c0ffee1", "beef002"):  # the first shard starts, the dataset moves on, the second starts
        monkeypatch.setattr(decontam, "resolved", lambda src, latest=latest: src.revision or latest)
        d = decontam.build(cfg, pins=pins)
        read.append((d.revisions, d.contaminated("text of commit c0ffee1 text"), d.contaminated("of commit beef002")))
    assert read[0] == read[1] == ({"THUDM/LongBench qasper test": "c0ffee1"}, True, False)
    assert len(list(pins.glob("*.json"))) == 1
    sources[0].revision = "beef002"  # the recipe's own pin wins and is not recorded for the job
    assert decontam.build(cfg, pins=pins).revisions == {"THUDM/LongBench qasper test": "beef002"}
    assert len(list(pins.glob("*.json"))) == 1


def test_repeated_corpus_ids_are_skipped_and_counted(tmp_path, env_key):
    """`id_field: url` names items, rows and requests: a second text with a url already seen is counted and
    skipped (two rows with one id, two texts answered by one cached reply, otherwise)."""
    import pyarrow.parquet as pq

    from in2.synth.config import CorpusConfig
    from in2.synth.corpus import iter_texts

    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("w") as f:
        for i, t in enumerate(iter_texts(CorpusConfig(source="builtin:pydoc"))):
            f.write(json.dumps({"url": f"https://example.org/{i // 2}", "text": t.text}) + "\n")  # pairs share a url
    with CannedServer() as s:
        cfg = write_config(tmp_path, s.url, corpus={"source": str(corpus), "id_field": "url", "filler_pool_texts": 200})
        assert main(["synth", "--config", str(cfg)]) == 0
    m = manifest(tmp_path / "run")
    assert m["counts"]["corpus"]["skipped_duplicate_id"] == m["counts"]["corpus"]["texts_read"] // 2
    ids = [i for f in (tmp_path / "run").rglob("*.parquet") for i in pq.read_table(f, columns=["id"])["id"].to_pylist()]
    assert len(ids) == len(set(ids)) == 20 and "duplicate_row_ids" not in m


def test_merge_reports_rows_two_shards_built_from_one_id(tmp_path, env_key, capsys):
    """Each shard reads its own slice of the corpus, so one url can reach two shards: merge names it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from in2.synth import dataset
    from in2.synth.mixture import order_key

    with CannedServer() as s:
        cfg = write_config(tmp_path, s.url)
        for i in range(2):
            assert main(["synth", "--config", str(cfg), "--num-shards", "2", "--shard-index", str(i)]) == 0
    shards = sorted((tmp_path / "run.shards").iterdir())
    twin = next(dataset.read_rows(shards[0] / "rows.parquet"))
    table = pq.read_table(shards[1] / "rows.parquet")
    rows = sorted([*table.to_pylist(), twin], key=lambda r: order_key(42, r["id"]))
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shards[1] / "rows.parquet")
    m = manifest(shards[1])
    m["counts"]["rows"][twin["type"]] += 1
    m["rows_file"] = {"rows": len(rows), "bytes": (shards[1] / "rows.parquet").stat().st_size}
    (shards[1] / "manifest.json").write_text(json.dumps(m))
    assert main(["merge", "--config", str(cfg)]) == 0
    assert manifest(tmp_path / "run")["duplicate_row_ids"] == {"rows": 1, "ids": [twin["id"]]}
    assert f"1 rows repeat the id of another row (e.g. {twin['id']})" in capsys.readouterr().err
