"""The engine: cache lookups, then the configured backend (in2.llm.base) for what is missing; usage totals."""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property

from in2.llm.base import Backend, FatalRequestError, Request, Response, backend_class
from in2.llm.cache import Cache, request_key
from in2.llm.config import GeneratorConfig
from in2.llm.ledger import Ledger


@dataclass
class Usage:
    """One accounting of a run's requests: every request asked for (`planned`) is sent, answered from
    the cache, deduplicated (identical to an earlier request of the same call, which answers it) or
    failed. Tokens count every distinct answer used, fresh or cached, so a cached rerun reports the
    same usage as the run that paid for it; `sent_*` tokens are what this run may have paid for: every
    attempt of every request sent, failed or answered (Response.billed)."""

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
        billed_prompt, billed_completion = r.billed  # every attempt, failed ones too
        self.sent_prompt_tokens += billed_prompt
        self.sent_completion_tokens += billed_completion
        if r.error is not None:
            self.failed[r.error.split(":")[0]] += 1
            return
        if r.cached:
            self.cached += 1
        else:
            self.sent += 1
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens

    @staticmethod
    def price(cfg: GeneratorConfig, prompt_tokens: int, completion_tokens: int) -> float:
        """USD at the generator's prices (x batch_price_factor for a backend priced per batch)."""
        factor = cfg.batch_price_factor if getattr(backend_class(cfg.backend), "batch_priced", False) else 1.0
        return factor * (prompt_tokens * cfg.price_input_per_1m + completion_tokens * cfg.price_output_per_1m) / 1e6

    @property
    def asked(self) -> int:
        """Requests this run sent, answered or failed (what generator.max_requests counts)."""
        return self.sent + sum(self.failed.values())

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
    replies never are, so a rerun asks again.

    Spend: what every sent request may have cost is added to `job`'s total in the cache with its answer
    (a killed run's spend is kept). generator.max_cost_usd caps that total over every run of the job,
    plus, with a `ledger`, what the job's other processes (shards) published there.
    Errors: generator.max_errors_in_a_row identical errors in a row, or more than max_failure_rate of
    this run's requests failed (once 100 were sent), stop the run with FatalRequestError."""

    def __init__(self, cfg: GeneratorConfig, job: str = "", ledger: Ledger | None = None):
        self.cfg = cfg
        self.backend_class = backend_class(cfg.backend)
        self.cache = Cache(cfg.cache_dir)
        self.usage = Usage()
        self.job, self.ledger = job, ledger
        self._backend: Backend | None = None
        self._streak: tuple[str | None, int] = (None, 0)

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
            answer = response.error is None and (response.text or "").strip()  # an empty reply is no answer
            p, c = response.billed
            self.cache.put(
                todo[j] if answer else None,
                response.to_json(),
                spend=(self.job, p, c, Usage.price(self.cfg, p, c)),
            )
            for i in pending[todo[j]]:
                out[i] = response
            self.check_errors(response)

        # With a budget, requests go in slices of a few rounds and the budget is checked between them;
        # without one, all at once (the backends schedule best over everything).
        limited = self.cfg.max_requests is not None or self.cfg.max_cost_usd is not None
        rounds = self.backend_class.slots(self.cfg)
        step = max(1, 4 * rounds) if limited else max(1, len(todo))
        lo = 0
        while lo < len(todo):
            self.check_budget()
            hi = min(lo + step, len(todo))
            if self.cfg.max_requests is not None:  # > lo: check_budget stops the run at the limit
                hi = min(hi, lo + self.cfg.max_requests - self.usage.asked)
            keys = list(range(lo, hi))
            with self.cache.grouped() if getattr(self.backend_class, "bulk", False) else nullcontext():
                self.backend.run(
                    [requests[pending[todo[j]][0]] for j in keys],
                    self.sampling,
                    lambda i, r, keys=keys: done(keys[i], r),
                    desc=desc,
                )
            lo = hi
        self.publish()
        return out  # type: ignore[return-value]

    def check_errors(self, response: Response) -> None:
        """Stop the run on a systematic error (class docstring), with one line naming it and the field."""
        c, error = self.cfg, response.error
        last, n = self._streak
        self._streak = (error, n + 1 if error is not None and error == last else int(error is not None))
        why = f"{error} ({response.detail})" if response.detail else error
        if self._streak[1] >= c.max_errors_in_a_row:
            raise FatalRequestError(
                f"generator.max_errors_in_a_row: {self._streak[1]} requests in a row failed with {why} after "
                f"{c.max_retries} retries each (fix the cause, e.g. the account's quota or a bad setting)"
            )
        failed, asked = sum(self.usage.failed.values()), self.usage.asked
        if error is not None and asked >= 100 and failed > c.max_failure_rate * asked:
            raise FatalRequestError(
                f"generator.max_failure_rate: {failed} of {asked} requests failed after {c.max_retries} retries "
                f"each ({', '.join(f'{k} x{v}' for k, v in self.usage.failed.most_common())}); last: {why}"
            )

    def spent(self) -> dict:
        """The job's spend: this process's over all its runs (its cache; its ledger file if the cache was
        lost), and every other process's published in the ledger."""
        own = self.cache.spent(self.job)
        others = 0.0
        if self.ledger is not None:
            books = self.ledger.read()
            own["usd"] = max(own["usd"], books.pop(self.ledger.name, {}).get("usd", 0.0))
            others = sum(b.get("usd", 0.0) for b in books.values())
        return {"own_usd": own["usd"], "job_usd": own["usd"] + others}

    def publish(self) -> None:
        """Write this process's spend to the job's ledger (if any)."""
        if self.ledger is not None:
            self.ledger.publish({**self.cache.spent(self.job), "usd": self.spent()["own_usd"]})

    def check_budget(self) -> None:
        """Raise BudgetExceeded when a limit is reached (called while work remains)."""
        c = self.cfg
        self.publish()
        if c.max_requests is not None and self.usage.asked >= c.max_requests:
            raise BudgetExceeded(f"generator.max_requests={c.max_requests} reached after {self.usage.asked} requests")
        if c.max_cost_usd is not None and (job := self.spent()["job_usd"]) >= c.max_cost_usd:
            raise BudgetExceeded(
                f"generator.max_cost_usd={c.max_cost_usd} reached: the job has spent an estimated ${job:.4f} "
                f"over all its runs{' and shards' if self.ledger else ''} (${self.usage.cost(c):.4f} this run)"
            )

    def close(self) -> None:
        self.publish()
        self.cache.close()
