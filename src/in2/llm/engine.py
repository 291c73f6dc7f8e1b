"""The engine: cache lookups, then the configured backend for what is missing; usage totals."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

from in2.config import GeneratorConfig
from in2.llm.cache import Cache, request_key
from in2.llm.weights import fingerprint


@dataclass(frozen=True)
class Request:
    """A chat prompt, or with `raw` a text prompt sent as is (no chat template; the tokenizer adds its
    usual special tokens, e.g. BOS). `prefix` starts the assistant turn (prefill); the answer continues it."""

    messages: tuple[tuple[str, str], ...] = ()
    prefix: str = ""
    stop: tuple[str, ...] = ()
    """Generation ends before the first of these strings (which is not part of the text)."""
    raw: str | None = None
    max_tokens: int | None = None
    """Overrides the generator's max_tokens for this request (e.g. LongBench's per-task limits)."""

    @classmethod
    def user(cls, content: str, prefix: str = "", stop: tuple[str, ...] = (), max_tokens: int | None = None) -> Request:
        return cls(messages=(("user", content),), prefix=prefix, stop=stop, max_tokens=max_tokens)

    @classmethod
    def text(cls, prompt: str, stop: tuple[str, ...] = (), max_tokens: int | None = None) -> Request:
        return cls(raw=prompt, stop=stop, max_tokens=max_tokens)

    def as_messages(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class Response:
    """The continuation after the prefix (`text`), or the error that survived all retries."""

    text: str | None
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


@dataclass
class Usage:
    """Counts over a run: requests sent vs served from cache, failures by kind, tokens, cost."""

    sent: int = 0
    cached: int = 0
    failed: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, r: Response) -> None:
        if r.error is not None:
            self.failed[r.error.split(":")[0]] += 1
            return
        if r.cached:
            self.cached += 1
        else:
            self.sent += 1
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens

    def cost(self, cfg: GeneratorConfig) -> float:
        return (self.prompt_tokens * cfg.price_input_per_1m + self.completion_tokens * cfg.price_output_per_1m) / 1e6

    def to_json(self, cfg: GeneratorConfig) -> dict:
        return {
            "requests_sent": self.sent,
            "requests_cached": self.cached,
            "requests_failed": dict(self.failed),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "estimated_cost_usd": round(self.cost(cfg), 4),
        }


class BudgetExceeded(RuntimeError):
    """The run reached generator.max_requests or max_cost_usd; every answer so far is cached."""


class Engine:
    """`generate(requests)` returns one Response per request, in order, answering from the cache
    first and sending only the rest. Successful answers are cached as they arrive."""

    def __init__(self, cfg: GeneratorConfig, backend=None):
        self.cfg = cfg
        self.cache = Cache(cfg.cache_dir)
        self.usage = Usage()
        self._backend = backend

    @property
    def sampling(self) -> dict:
        c = self.cfg
        s = {"temperature": c.temperature, "top_p": c.top_p, "max_tokens": c.max_tokens}
        if c.backend == "transformers" and c.repetition_penalty is not None:
            s["repetition_penalty"] = c.repetition_penalty
        return s

    @cached_property
    def model_id(self) -> str:
        """What answers (in2.llm.weights): a retrained model at the same path gets new cache keys."""
        return fingerprint(self.cfg, self.cache)

    def key(self, request: Request) -> str:
        sampling = {**self.sampling, "stop": list(request.stop)} if request.stop else dict(self.sampling)
        if request.max_tokens is not None:
            sampling["max_tokens"] = request.max_tokens
        messages = request.as_messages() if request.raw is None else [{"raw": request.raw}]
        return request_key(self.model_id, messages, request.prefix, sampling)

    @property
    def backend(self):
        if self._backend is None:
            if self.cfg.backend == "openai":
                from in2.llm.openai_backend import OpenAIBackend

                self._backend = OpenAIBackend(self.cfg)
            else:
                from in2.llm.local_backend import LocalBackend

                self._backend = LocalBackend(self.cfg)
        return self._backend

    def cached(self, requests: list[Request]) -> int:
        """How many of `requests` the cache already answers (nothing is sent)."""
        return sum(self.cache.get(self.key(r)) is not None for r in requests)

    def generate(self, requests: list[Request], desc: str = "generate") -> list[Response]:
        out: list[Response | None] = [None] * len(requests)
        keys = [self.key(r) for r in requests]
        pending: dict[str, list[int]] = {}  # identical requests in one call are sent once
        for i, k in enumerate(keys):
            if k in pending:
                pending[k].append(i)
                continue
            hit = self.cache.get(k)
            if hit is not None:
                out[i] = Response(**hit, cached=True)
                self.usage.add(out[i])
            else:
                pending[k] = [i]
        todo = list(pending)

        def done(j: int, response: Response) -> None:
            self.usage.add(response)
            if response.error is None:
                self.cache.put(todo[j], response.to_json())
            for i in pending[todo[j]]:
                out[i] = response

        # With a budget, requests go in slices of a few rounds and the budget is checked between them;
        # without one, all at once (the backends schedule best over everything).
        limited = self.cfg.max_requests is not None or self.cfg.max_cost_usd is not None
        rounds = self.cfg.concurrency if self.cfg.backend == "openai" else self.cfg.batch_size
        step = max(1, 4 * rounds) if limited else max(1, len(todo))
        for lo in range(0, len(todo), step):
            self.check_budget()
            hi = lo + step
            if self.cfg.max_requests is not None:
                hi = min(hi, lo + self.cfg.max_requests - self.usage.sent)
            keys = list(range(lo, min(hi, len(todo))))
            self.backend.run(
                [requests[pending[todo[j]][0]] for j in keys],
                self.sampling,
                lambda i, r, keys=keys: done(keys[i], r),
                desc=desc,
            )
        self.check_budget(finished=all(o is not None for o in out))
        return out  # type: ignore[return-value]

    def check_budget(self, finished: bool = False) -> None:
        """Raise BudgetExceeded when a limit is reached and work remains."""
        c = self.cfg
        if finished:
            return
        if c.max_requests is not None and self.usage.sent >= c.max_requests:
            raise BudgetExceeded(f"generator.max_requests={c.max_requests} reached after {self.usage.sent} requests")
        if c.max_cost_usd is not None and self.usage.cost(c) >= c.max_cost_usd:
            raise BudgetExceeded(
                f"generator.max_cost_usd={c.max_cost_usd} reached (estimated ${self.usage.cost(c):.2f} this run)"
            )

    def close(self) -> None:
        self.cache.close()
