"""The engine and the OpenAI-compatible backend over real HTTP on 127.0.0.1."""

import pytest

from in2.config import ConfigError, GeneratorConfig
from in2.llm import Engine, Request
from in2.llm.openai_backend import FatalRequestError
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
