"""The engine: cache lookups, then the configured backend (in2.llm.base) for what is missing; usage totals."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

from in2.llm.base import Backend, Request, Response, backend_class
from in2.llm.cache import Cache, request_key
from in2.llm.config import GeneratorConfig


@dataclass
class Usage:
    """One accounting of a run's requests: every request asked for (`planned`) is sent, answered from
    the cache, deduplicated (identical to an earlier request of the same call, which answers it) or
    failed. Tokens count every distinct answer used, fresh or cached, so a cached rerun reports the
    same usage as the run that paid for it; `sent_*` tokens are what this run paid for."""

    planned: int = 0
    sent: int = 0
    cached: int = 0
    deduplicated: int = 0
    failed: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    sent_prompt_tokens: int = 0
    sent_completion_tokens: int = 0

    def add(self, r: Response) -> None:
        if r.error is not None:
            self.failed[r.error.split(":")[0]] += 1
            return
        if r.cached:
            self.cached += 1
        else:
            self.sent += 1
            self.sent_prompt_tokens += r.prompt_tokens
            self.sent_completion_tokens += r.completion_tokens
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens

    @staticmethod
    def price(cfg: GeneratorConfig, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * cfg.price_input_per_1m + completion_tokens * cfg.price_output_per_1m) / 1e6

    def cost(self, cfg: GeneratorConfig) -> float:
        """This run's spend: what was sent (answers from the cache cost nothing)."""
        return self.price(cfg, self.sent_prompt_tokens, self.sent_completion_tokens)

    def to_json(self, cfg: GeneratorConfig) -> dict:
        return {
            "requests_planned": self.planned,
            "requests_sent": self.sent,
            "requests_cached": self.cached,
            "requests_deduplicated": self.deduplicated,
            "requests_failed": dict(self.failed),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "estimated_cost_usd": round(self.price(cfg, self.prompt_tokens, self.completion_tokens), 4),
            "sent_prompt_tokens": self.sent_prompt_tokens,
            "sent_completion_tokens": self.sent_completion_tokens,
            "spent_usd_this_run": round(self.cost(cfg), 4),
        }


class BudgetExceeded(RuntimeError):
    """The run reached generator.max_requests or max_cost_usd; every answer so far is cached."""


class Engine:
    """`generate(requests)` returns one Response per request, in order, answering from the cache
    first and sending only the rest. Successful answers are cached as they arrive; failures and empty
    replies never are, so a rerun asks again."""

    def __init__(self, cfg: GeneratorConfig):
        self.cfg = cfg
        self.backend_class = backend_class(cfg.backend)
        self.cache = Cache(cfg.cache_dir)
        self.usage = Usage()
        self._backend: Backend | None = None

    @property
    def sampling(self) -> dict:
        c = self.cfg
        s = {"temperature": c.temperature, "top_p": c.top_p, "max_tokens": c.max_tokens}
        for name in self.backend_class.sampling_fields:
            if getattr(c, name) is not None:
                s[name] = getattr(c, name)
        return s

    @cached_property
    def model_id(self) -> str:
        """What answers (the backend's `model_id`): a retrained model at the same path gets new cache keys."""
        return self.backend_class.model_id(self.cfg, self.cache)

    def key(self, request: Request) -> str:
        sampling = {**self.sampling, "stop": list(request.stop)} if request.stop else dict(self.sampling)
        if request.max_tokens is not None:
            sampling["max_tokens"] = request.max_tokens
        messages = request.as_messages() if request.raw is None else [{"raw": request.raw}]
        return request_key(self.model_id, messages, request.prefix, sampling)

    @property
    def backend(self) -> Backend:
        """The backend, built on first use (a local one loads its model then)."""
        if self._backend is None:
            self._backend = self.backend_class(self.cfg)
        return self._backend

    def cached(self, requests: list[Request]) -> int:
        """How many of `requests` the cache already answers (nothing is sent)."""
        return sum(self.cache.get(self.key(r)) is not None for r in requests)

    def generate(self, requests: list[Request], desc: str = "generate") -> list[Response]:
        out: list[Response | None] = [None] * len(requests)
        keys = [self.key(r) for r in requests]
        self.usage.planned += len(requests)
        first: dict[str, int] = {}  # identical requests in one call are answered once
        pending: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if k in first:
                self.usage.deduplicated += 1
                if k in pending:
                    pending[k].append(i)
                else:
                    out[i] = out[first[k]]
                continue
            first[k] = i
            hit = self.cache.get(k)
            if hit is not None:
                out[i] = Response(**hit, cached=True)
                self.usage.add(out[i])
            else:
                pending[k] = [i]
        todo = list(pending)

        def done(j: int, response: Response) -> None:
            self.usage.add(response)
            if response.error is None and (response.text or "").strip():  # an empty reply is no answer
                self.cache.put(todo[j], response.to_json())
            for i in pending[todo[j]]:
                out[i] = response

        # With a budget, requests go in slices of a few rounds and the budget is checked between them;
        # without one, all at once (the backends schedule best over everything).
        limited = self.cfg.max_requests is not None or self.cfg.max_cost_usd is not None
        rounds = self.backend_class.slots(self.cfg)
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
