"""The engine and the OpenAI-compatible backend over real HTTP on 127.0.0.1."""

import os

import pytest

from in2.errors import ConfigError
from in2.llm import Engine, Request
from in2.llm.base import FatalRequestError
from in2.llm.config import GeneratorConfig
from tests.openai_server import CannedServer


def _cfg(url, tmp_path, **kw):
    base = dict(
        backend="openai",
        model="canned",
        base_url=url,
        cache_dir=str(tmp_path / "cache"),
        gguf_file=None,
        concurrency=4,
        max_retries=3,
        timeout_s=10,
    )
    return GeneratorConfig(**{**base, **kw})


def _requests(n):
    return [
        Request.user(f"### Context ###\nalpha beta gamma delta {i} epsilon zeta eta\n\nReply with x") for i in range(n)
    ]


def test_answers_come_back_in_order_and_usage_is_counted(tmp_path):
    with CannedServer() as s:
        engine = Engine(_cfg(s.url, tmp_path, price_input_per_1m=1.0, price_output_per_1m=2.0))
        out = engine.generate(_requests(6))
    assert [r.text.split("\n")[0] for r in out] == ["Question: What is said about alpha beta gamma?"] * 6
    assert [r.text.split("\n")[1] for r in out] == [f"Answer: delta {i} epsilon zeta eta" for i in range(6)]
    assert engine.usage.sent == 6 and engine.usage.cached == 0
    assert engine.usage.prompt_tokens > 0 and engine.usage.cost(engine.cfg) > 0


def test_429_and_500_are_retried(tmp_path):
    with CannedServer(faults={1: 429, 2: 500}) as s:
        out = Engine(_cfg(s.url, tmp_path)).generate(_requests(3))
    assert all(r.error is None and r.text.startswith("Question:") for r in out)
    assert all(n == 3 for n in s.attempts.values())  # 429, 500, then the answer
    assert sum(s.answered.values()) == 3


def test_failures_after_retries_are_reported_not_cached(tmp_path):
    with CannedServer(faults={1: 500, 2: 500, 3: 500, 4: 500}) as s:
        engine = Engine(_cfg(s.url, tmp_path))
        out = engine.generate(_requests(2))
        assert [r.error for r in out] == ["http_500", "http_500"]
        assert dict(engine.usage.failed) == {"http_500": 2}
        again = engine.generate(_requests(2))  # not cached: sent again, 5th attempt succeeds
    assert all(r.error is None for r in again)


def test_cache_answers_a_rerun_without_sending(tmp_path):
    with CannedServer() as s:
        first = Engine(_cfg(s.url, tmp_path)).generate(_requests(5))
        engine = Engine(_cfg(s.url, tmp_path))
        second = engine.generate(_requests(5))
    assert [r.text for r in first] == [r.text for r in second]
    assert sum(s.answered.values()) == 5 and engine.usage.sent == 0 and engine.usage.cached == 5


def test_cache_key_covers_sampling(tmp_path):
    with CannedServer() as s:
        Engine(_cfg(s.url, tmp_path)).generate(_requests(2))
        Engine(_cfg(s.url, tmp_path, temperature=0.5)).generate(_requests(2))
    assert sum(s.answered.values()) == 4


def test_prefill_continues_the_assistant_turn(tmp_path):
    with CannedServer() as s:
        [r] = Engine(_cfg(s.url, tmp_path)).generate(
            [Request(messages=_requests(1)[0].messages, prefix="Question:", stop=("\n",))]
        )
    body = s.bodies[-1]
    assert body["messages"][-1] == {"role": "assistant", "content": "Question:"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["stop"] == ["\n"]
    assert r.text == " What is said about alpha beta gamma?"


def test_bad_key_stops_the_run_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("IN2_TEST_KEY", "sk-wrong-key-123")
    with CannedServer(status_for_all=401) as s:
        with pytest.raises(FatalRequestError, match=r"refused the key from \$IN2_TEST_KEY") as err:
            Engine(_cfg(s.url, tmp_path, api_key_env="IN2_TEST_KEY")).generate(_requests(2))
    assert "sk-wrong" not in str(err.value)


def test_missing_key_for_openai_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("IN2_NO_SUCH_KEY", raising=False)
    cfg = GeneratorConfig(
        backend="openai", model="gpt-4o", base_url=None, api_key_env="IN2_NO_SUCH_KEY", cache_dir=str(tmp_path)
    )
    with pytest.raises(ConfigError, match="IN2_NO_SUCH_KEY"):
        Engine(cfg).generate(_requests(1))


def test_unreachable_endpoint_stops_the_run(tmp_path):
    cfg = _cfg("http://127.0.0.1:9/v1", tmp_path, max_retries=0)
    with pytest.raises(FatalRequestError, match="cannot reach http://127.0.0.1:9/v1"):
        Engine(cfg).generate(_requests(10))


def test_identical_requests_in_one_call_are_sent_once(tmp_path):
    with CannedServer() as s:
        fresh = Engine(_cfg(s.url, tmp_path))
        out = fresh.generate(_requests(2) + _requests(2))
        cached = Engine(_cfg(s.url, tmp_path))
        again = cached.generate(_requests(2) + _requests(2))
    assert sum(s.answered.values()) == 2
    assert [r.text for r in out[:2]] == [r.text for r in out[2:]] == [r.text for r in again[2:]]
    # one accounting, the same usage fresh or cached: planned = sent + cached + deduplicated
    f, c = fresh.usage, cached.usage
    assert (f.planned, f.sent, f.cached, f.deduplicated) == (4, 2, 0, 2)
    assert (c.planned, c.sent, c.cached, c.deduplicated) == (4, 0, 2, 2)
    assert c.prompt_tokens == f.prompt_tokens > 0 and c.completion_tokens == f.completion_tokens
    assert c.cost(cached.cfg) == 0 and c.sent_prompt_tokens == 0


def test_an_empty_reply_is_retried_and_never_cached(tmp_path):
    with CannedServer(chaos_rate=1.0, chaos_kinds=("empty",)) as s:
        engine = Engine(_cfg(s.url, tmp_path, max_retries=2))
        out = engine.generate(_requests(2))
        assert [r.text for r in out] == ["", ""] and list(s.attempts.values()) == [3, 3]  # 1 + 2 retries
        assert len(engine.cache) == 0
    with CannedServer(chaos_rate=0.5, chaos_kinds=("empty",)) as s:  # half the attempts are empty
        engine = Engine(_cfg(s.url, tmp_path, max_retries=6))
        out = engine.generate(_requests(8))
    assert all(r.text.startswith("Question:") for r in out) and s.chaos["empty"] >= 1
    assert engine.usage.sent == 8 and len(engine.cache) == 8


def test_cache_version_is_part_of_the_key(tmp_path, monkeypatch):
    from in2.llm import cache

    with CannedServer() as s:
        Engine(_cfg(s.url, tmp_path)).generate(_requests(2))
        monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
        engine = Engine(_cfg(s.url, tmp_path))
        engine.generate(_requests(2))
    assert engine.usage.sent == 2 and sum(s.answered.values()) == 4


def test_the_local_repetition_penalty_spares_the_prompt():
    """The penalty covers the reply's tokens only: a grounded answer may reuse its passage's words."""
    import torch

    from in2.llm.local_backend import _reply_repetition_penalty

    input_ids = torch.tensor([[5, 6, 7, 8]])  # prompt 5, 6, 7; reply so far 8
    scores = torch.tensor([[0.0, 0, 0, 0, 0, 2.0, 2.0, -1.0, 2.0, 1.0]])
    out = _reply_repetition_penalty(2.0, start=3)(input_ids, scores.clone())
    assert out[0, 5:8].tolist() == [2.0, 2.0, -1.0] and out[0, 8].item() == 1.0 and out[0, 9].item() == 1.0


# --- what a local model's cache keys carry ---------------------------------------------------------


def _local(model, tmp_path, **kw):
    return GeneratorConfig(**{"backend": "transformers", "model": str(model), "gguf_file": None, **kw})


def test_weights_fingerprint_follows_what_changes_answers(tmp_path):
    import shutil

    from in2.llm.base import backend_class
    from in2.llm.cache import Cache
    from in2.llm.weights import fingerprint

    model, cache = tmp_path / "model", Cache(tmp_path / "cache")
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"a" * 1000)
    (model / "config.json").write_text('{"rope_theta": 10000}')
    (model / "tokenizer.json").write_text("{}")
    base = fingerprint(_local(model, tmp_path), cache)
    assert base.startswith("weights-sha256:")
    served = backend_class("openai").model_id(_local(model, tmp_path, backend="openai"), cache)
    assert served.startswith("weights-sha256:")  # a server of this folder: its weights, whatever its dtype
    assert backend_class("openai").model_id(_local("gpt-4o", tmp_path, backend="openai"), cache) == "gpt-4o"
    # what training and evaluation write beside the weights changes no answer
    for name in ("README.md", "eval_results.json", "in2_card.json", "trainer_state.json", "optimizer.pt"):
        (model / name).write_text("x")
    (model / "checkpoint-1").mkdir()
    (model / "checkpoint-1" / "model.safetensors").write_bytes(b"other")
    assert fingerprint(_local(model, tmp_path), cache) == base
    # content, not path: a copy elsewhere is the same model
    copy = shutil.copytree(model, tmp_path / "copy")
    assert fingerprint(_local(copy, tmp_path), cache) == base
    # new weights of the same size, another config or tokenizer, another dtype: another model
    (copy / "model.safetensors").write_bytes(b"b" * 1000)
    assert fingerprint(_local(copy, tmp_path), cache) != base
    for name, text in (("config.json", '{"rope_theta": 1000000}'), ("tokenizer.json", '{"x": 1}')):
        changed = shutil.copytree(model, tmp_path / f"changed-{name}")
        (changed / name).write_text(text)
        assert fingerprint(_local(changed, tmp_path), cache) != base, name
    assert fingerprint(_local(model, tmp_path, dtype="bfloat16"), cache) != base
    # a file is hashed once per version (size, mtime, ctime): a stale row is used until the file changes
    cache._db.execute("UPDATE files SET sha256 = 'stale'")
    assert fingerprint(_local(model, tmp_path), cache) != base
    for name in ("model.safetensors", "config.json", "tokenizer.json"):  # rewritten: a new version, hashed again
        st = (model / name).stat()
        os.utime(model / name, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fingerprint(_local(model, tmp_path), cache) == base


def test_gguf_adapter_and_hub_fingerprints(tmp_path, monkeypatch):
    import json

    from huggingface_hub import constants

    from in2.llm.cache import Cache
    from in2.llm.weights import fingerprint

    cache = Cache(tmp_path / "cache")
    folder = tmp_path / "gguf"
    folder.mkdir()
    (folder / "m.Q4.gguf").write_bytes(b"q4")
    (folder / "m.Q8.gguf").write_bytes(b"q8")
    q4 = fingerprint(_local(folder, tmp_path, gguf_file="m.Q4.gguf"), cache)
    assert q4 != fingerprint(_local(folder, tmp_path, gguf_file="m.Q8.gguf"), cache)
    (folder / "m.Q8.gguf").write_bytes(b"q8 retrained")  # the other file changes nothing for Q4
    assert fingerprint(_local(folder, tmp_path, gguf_file="m.Q4.gguf"), cache) == q4
    # a PEFT adapter answers with its base model too
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    for d in (base, adapter):
        d.mkdir()
    (base / "model.safetensors").write_bytes(b"base")
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    before = fingerprint(_local(adapter, tmp_path), cache)
    (base / "model.safetensors").write_bytes(b"base retrained")
    assert fingerprint(_local(adapter, tmp_path), cache) != before
    # a Hub id: the commit its cache (offline here) holds for main
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = tmp_path / "hub" / "models--org--tiny" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("1111111111111111111111111111111111111111")
    first = fingerprint(_local("org/tiny", tmp_path), cache)
    ref.write_text("2222222222222222222222222222222222222222")
    assert fingerprint(_local("org/tiny", tmp_path), cache) != first


# --- the backend seam: a new backend is one class and one registry entry ----------------------------


class EchoBackend:
    """A whole backend in a few lines: answers every request with its last message, upper-cased, cut to
    `max_tokens` words; `repetition_penalty` (a sampling field it declares) is part of the cache key."""

    local = False
    sampling_fields = ("repetition_penalty",)
    built = 0

    @classmethod
    def slots(cls, cfg):
        return cfg.concurrency

    @classmethod
    def model_id(cls, cfg, cache):
        return f"echo:{cfg.model}"

    def __init__(self, cfg):
        EchoBackend.built += 1

    def run(self, requests, sampling, done, desc):
        from in2.llm import Response

        for i, r in enumerate(requests):
            words = (r.raw if r.raw is not None else r.messages[-1][1]).upper().split()
            limit = r.max_tokens or sampling["max_tokens"]
            done(i, Response(text=" ".join(words[:limit]), finish_reason="stop", completion_tokens=len(words[:limit])))


def test_a_registered_backend_answers_through_the_engine(tmp_path, monkeypatch):
    from in2.llm import base
    from in2.llm.config import generator_checks

    cfg = GeneratorConfig(backend="echo", model="toy", gguf_file=None, cache_dir=str(tmp_path), max_tokens=3)
    assert any(bad and name == "g.backend" for bad, name, _ in generator_checks(cfg, "g"))  # unknown until registered
    monkeypatch.setitem(base.BACKENDS, "echo", EchoBackend)  # the registry line
    assert not any(bad for bad, _, _ in generator_checks(cfg, "g"))
    engine = Engine(cfg)
    out = engine.generate(
        [Request.user("say a b c d"), Request.text("raw one", max_tokens=1), Request.user("say a b c d")]
    )
    assert [r.text for r in out] == ["SAY A B", "RAW", "SAY A B"]
    assert (engine.usage.sent, engine.usage.deduplicated, EchoBackend.built) == (2, 1, 1)
    again = Engine(cfg)  # a second run is answered from the cache: the backend is never built
    assert [r.text for r in again.generate([Request.user("say a b c d")])] == ["SAY A B"]
    assert again.usage.cached == 1 and EchoBackend.built == 1
    assert "repetition_penalty" not in again.sampling
    penalized = Engine(GeneratorConfig(**{**cfg.__dict__, "repetition_penalty": 1.2}))
    assert penalized.sampling["repetition_penalty"] == 1.2
    assert penalized.key(Request.user("x")) != again.key(Request.user("x"))
    assert again.model_id == "echo:toy"


def test_a_served_folder_is_keyed_by_its_weights_and_a_named_model_by_its_server(tmp_path):
    """vLLM serving checkpoints/<run> (eval recipes): retraining that folder must change the cache keys and
    the prediction fingerprint; the same model name at two servers are two models."""
    from in2.evaluation.runner import fingerprint

    served = tmp_path / "checkpoints" / "run"
    served.mkdir(parents=True)
    (served / "config.json").write_text("{}")
    (served / "model.safetensors").write_bytes(b"weights of the first training")
    with CannedServer() as a, CannedServer() as b:
        cfg = _cfg(a.url, tmp_path, model=str(served))
        engine = Engine(cfg)
        engine.generate(_requests(2))
        before = fingerprint(engine, _requests(2))[0]
        engine.close()
        (served / "README.md").write_text("a card written beside the weights changes no answer")
        engine = Engine(cfg)
        engine.generate(_requests(2))
        assert engine.usage.cached == 2 and fingerprint(engine, _requests(2))[0] == before
        engine.close()
        (served / "model.safetensors").write_bytes(b"weights of the second training")  # retrained in place
        engine = Engine(cfg)
        engine.generate(_requests(2))
        assert engine.usage.sent == 2 and fingerprint(engine, _requests(2))[0] != before
        engine.close()
        request = _requests(1)[0]
        assert Engine(_cfg(a.url, tmp_path)).key(request) != Engine(_cfg(b.url, tmp_path)).key(request)
    assert sum(a.answered.values()) == 4 and not b.answered


def test_a_request_budget_sends_exactly_that_many_requests_even_when_some_fail(tmp_path):
    """A slice clipped by max_requests must not skip the requests after it (they came back as None)."""
    from in2.llm.engine import BudgetExceeded

    with CannedServer(chaos_rate=0.5, chaos_kinds=("500",)) as s:
        engine = Engine(_cfg(s.url, tmp_path, concurrency=1, max_retries=0, max_requests=6))
        with pytest.raises(BudgetExceeded, match="max_requests=6 reached after 6 requests"):
            engine.generate(_requests(20))
        assert len(s.attempts) == 6 and 0 < sum(s.answered.values()) < 6
        engine = Engine(_cfg(s.url, tmp_path, concurrency=1, max_retries=0, max_requests=40))
        out = engine.generate(_requests(20))
    assert all(r is not None for r in out) and any(r.error for r in out)
    assert engine.usage.asked + engine.usage.cached == 20


def test_the_cost_cap_is_the_jobs_over_reruns_and_processes(tmp_path):
    """max_cost_usd caps the job: a rerun starts from what earlier runs spent (recorded in the cache with
    each answer, so a killed run counts too), and another process's spend published in the ledger counts."""
    from in2.llm.engine import BudgetExceeded
    from in2.llm.ledger import Ledger

    prices = {"price_input_per_1m": 1000.0, "price_output_per_1m": 1000.0, "concurrency": 1}
    with CannedServer() as s:
        first = Engine(_cfg(s.url, tmp_path, max_cost_usd=0.2, **prices), job="job")
        with pytest.raises(BudgetExceeded):
            first.generate(_requests(40))
        paid = sum(s.answered.values())
        assert 0 < paid < 40 and first.spent()["job_usd"] >= 0.2  # not closed: as if killed
        rerun = Engine(_cfg(s.url, tmp_path, max_cost_usd=0.2, **prices), job="job")
        with pytest.raises(BudgetExceeded, match="the job has spent"):
            rerun.generate(_requests(40))
        assert sum(s.answered.values()) == paid  # nothing sent: the job's cap was already reached
        Engine(_cfg(s.url, tmp_path, **prices), job="job").generate(_requests(40))  # no cap: finishes
        assert sum(s.answered.values()) == 40 and max(s.answered.values()) == 1

        ledger = tmp_path / "spend"
        shard0 = Engine(_cfg(s.url, tmp_path / "0", **prices), job="job", ledger=Ledger(ledger, "shard-0"))
        shard0.generate(_requests(4))
        spent0 = shard0.spent()["own_usd"]
        shard0.close()  # publishes its spend
        shard1 = Engine(
            _cfg(s.url, tmp_path / "1", max_cost_usd=spent0, **prices),
            job="job",
            ledger=Ledger(ledger, "shard-1"),
        )
        with pytest.raises(BudgetExceeded, match="over all its runs and shards"):
            shard1.generate([Request.user("### Context ###\nanother text altogether here\n\nReply with x")])
        assert sum(s.answered.values()) == 44


def test_billed_attempts_count_timeouts_and_retried_empty_replies(tmp_path):
    """An attempt that timed out may have been billed (counted at prompt/4 + max_tokens); a retried empty
    reply's earlier attempts were billed."""
    prices = {"price_input_per_1m": 1.0, "price_output_per_1m": 1.0}
    with CannedServer(chaos_rate=1.0, chaos_kinds=("hang",), hang_s=1.0) as s:
        engine = Engine(_cfg(s.url, tmp_path, timeout_s=0.3, max_retries=1, max_tokens=50, **prices))
        out = engine.generate(_requests(2))
    assert [r.error for r in out] == ["timeout", "timeout"] and list(s.attempts.values()) == [2, 2]
    assert engine.usage.sent_completion_tokens == 2 * 2 * 50 and engine.usage.sent_prompt_tokens > 0
    assert (
        engine.cache.spent("")["usd"] == pytest.approx(engine.usage.cost(engine.cfg))
        and engine.usage.cost(engine.cfg) > 0
    )
    with CannedServer(chaos_rate=1.0, chaos_kinds=("empty",)) as s:
        engine = Engine(_cfg(s.url, tmp_path / "empty", max_retries=2, **prices))
        engine.generate(_requests(1))
        per_attempt = len(__import__("json").dumps(s.bodies[0]["messages"])) // 4  # the server's count
    assert list(s.attempts.values()) == [3] and engine.usage.sent_prompt_tokens == 3 * per_attempt


def test_systematic_errors_stop_the_run_with_one_line(tmp_path):
    with CannedServer(status_for_all=429, error_code="insufficient_quota") as s:
        engine = Engine(_cfg(s.url, tmp_path, concurrency=1, max_retries=0, max_errors_in_a_row=5))
        with pytest.raises(FatalRequestError, match=r"5 requests in a row failed with http_429 \(insufficient_quota\)"):
            engine.generate(_requests(40))
    assert sum(s.attempts.values()) == 5
    with CannedServer(chaos_rate=0.3, chaos_kinds=("500",)) as s:
        engine = Engine(_cfg(s.url, tmp_path, max_retries=0, max_failure_rate=0.1))
        with pytest.raises(FatalRequestError, match=r"max_failure_rate: \d+ of 1\d\d requests failed"):
            engine.generate(_requests(400))
