"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, TGI, llama.cpp, Ollama) via openai.AsyncOpenAI.

Retries on 408/409/429/5xx, timeouts and dropped connections are the openai client's own
(exponential backoff, Retry-After honoured up to two minutes); replies that are not valid JSON or
are empty are asked again here. What still fails is returned as a Response with an error, never
cached, so a rerun tries it again. Every attempt is counted in the response's billed tokens: those
answered with their usage, those that got no answer (a timeout, a dropped connection: the server may
have finished and billed them) and cut-off replies at an estimate (prompt characters / 4 plus max_tokens).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path

from tqdm.auto import tqdm

from in2 import redact
from in2.errors import ConfigError
from in2.llm.base import FatalRequestError, Request, Response
from in2.llm.cache import Cache
from in2.llm.config import GeneratorConfig
from in2.llm.weights import describe


def transient(response: Response) -> bool:
    """A reply worth asking again: not valid JSON, or empty (and not stopped by a content filter)."""
    if response.error is not None:
        return response.error == "invalid_response"
    return not (response.text or "").strip() and response.finish_reason != "content_filter"


_TALLY: ContextVar[dict | None] = ContextVar("in2_http_attempts", default=None)


async def _on_request(request) -> None:
    if (tally := _TALLY.get()) is not None:
        tally["sent"] += 1


async def _on_response(response) -> None:
    if (tally := _TALLY.get()) is not None:
        tally["answered"] += 1


def estimated_prompt_tokens(request: Request) -> int:
    return (len(request.raw or "") + sum(len(c) for _, c in request.messages) + len(request.prefix)) // 4


class _RateLimiter:
    """Spaces request starts to stay under requests/tokens per minute."""

    def __init__(self, rpm: float | None, tpm: float | None):
        self.rpm, self.tpm = rpm, tpm
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self, est_tokens: int) -> None:
        gaps = []
        if self.rpm:
            gaps.append(60.0 / self.rpm)
        if self.tpm:
            gaps.append(60.0 * est_tokens / self.tpm)
        if not gaps:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + max(gaps)
        await asyncio.sleep(max(0.0, start - now))


class OpenAIBackend:
    """A server reached through openai.AsyncOpenAI, `generator.concurrency` requests in flight."""

    local = False
    sampling_fields = ()

    @classmethod
    def slots(cls, cfg: GeneratorConfig) -> int:
        return cfg.concurrency

    @classmethod
    def model_id(cls, cfg: GeneratorConfig, cache: Cache) -> str:
        """What the server answers with: the fingerprint of the weights when `model` is a local folder or
        file (the path a server such as vLLM serves, e.g. a checkpoint `in2 train` writes again), else the
        model's name and the server: `server_id`, else its URL (OpenAI's API: the name alone, as every cache so far)."""
        if Path(cfg.model).exists():  # gguf_file and dtype are the server's business here
            blob = json.dumps(describe(cfg.model, None, cache), sort_keys=True)
            return "weights-sha256:" + hashlib.sha256(blob.encode()).hexdigest()
        if cfg.base_url is None:
            return cfg.model
        return f"{cfg.model}@{cfg.server_id or redact.url(cfg.base_url)}"

    def __init__(self, cfg: GeneratorConfig):
        self.cfg = cfg
        key = os.environ.get(cfg.api_key_env)
        if not key:
            if cfg.base_url is None:
                raise ConfigError(
                    f"generator.api_key_env: environment variable {cfg.api_key_env} is not set "
                    "(needed for the OpenAI API; local servers only need generator.base_url)"
                )
            key = "EMPTY"  # local OpenAI-compatible servers accept any key
        self._key = key

    def _client(self):
        import openai

        return openai.AsyncOpenAI(
            api_key=self._key,
            base_url=self.cfg.base_url,
            max_retries=self.cfg.max_retries,
            timeout=self.cfg.timeout_s,
            http_client=openai.DefaultAsyncHttpxClient(
                event_hooks={"request": [_on_request], "response": [_on_response]}
            ),
        )

    async def _call(self, client, request: Request, sampling: dict) -> Response:
        """One request; a reply that is not valid JSON (a proxy cut it short, say) or that is empty (an
        overloaded server's HTTP 200 with no text) is asked again up to max_retries times, since the
        client retries only transport and status errors. An empty reply that survives the retries is
        returned as it is (the engine never caches it). Its billed tokens cover every attempt (module
        docstring)."""
        limit = request.max_tokens or sampling["max_tokens"]
        guess = estimated_prompt_tokens(request)
        billed = [0, 0]
        for attempt in range(self.cfg.max_retries + 1):
            tally = {"sent": 0, "answered": 0}
            _TALLY.set(tally)
            response = await self._call_once(client, request, sampling)
            unknown = tally["sent"] - tally["answered"] + (response.error == "invalid_response")
            billed[0] += unknown * guess + (response.prompt_tokens if response.error is None else 0)
            billed[1] += unknown * limit + (response.completion_tokens if response.error is None else 0)
            response.billed_prompt_tokens, response.billed_completion_tokens = billed
            if not transient(response) or attempt == self.cfg.max_retries:
                return response
            await asyncio.sleep(min(8.0, 0.5 * 2**attempt))
        return response

    async def _call_once(self, client, request: Request, sampling: dict) -> Response:
        import openai

        common = dict(
            model=self.cfg.model,
            temperature=sampling["temperature"],
            top_p=sampling["top_p"],
            max_tokens=request.max_tokens or sampling["max_tokens"],
            stop=list(request.stop) or None,
        )
        messages = request.as_messages()
        extra = {}
        if request.prefix:
            # vLLM-style prefill: the assistant turn continues from the prefix.
            messages.append({"role": "assistant", "content": request.prefix})
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        try:
            if request.raw is not None:  # the completions endpoint: the prompt goes to the model as is
                r = await client.completions.create(prompt=request.raw, **common)
            else:
                r = await client.chat.completions.create(messages=messages, extra_body=extra or None, **common)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise FatalRequestError(
                f"{redact.url(self.cfg.base_url) or 'OpenAI API'} refused the key from ${self.cfg.api_key_env} "
                f"(HTTP {e.status_code})"
            ) from None
        except openai.NotFoundError:
            raise FatalRequestError(
                f"{redact.url(self.cfg.base_url) or 'OpenAI API'}: model {self.cfg.model!r} or endpoint not found (HTTP 404)"
            ) from None
        except openai.APITimeoutError:
            return Response(text=None, error="timeout")
        except openai.APIConnectionError:
            return Response(text=None, error="connection_error")
        except openai.APIStatusError as e:
            reason = str(getattr(e, "code", None) or e.message).strip().splitlines() or [""]
            detail = redact.text(reason[0][:200])
            return Response(text=None, error=f"http_{e.status_code}", detail=detail or None)
        except (openai.APIResponseValidationError, json.JSONDecodeError):
            return Response(text=None, error="invalid_response")
        if not getattr(r, "choices", None):
            return Response(text=None, error="invalid_response")
        choice = r.choices[0]
        usage = r.usage
        text = choice.text if request.raw is not None else choice.message.content
        return Response(
            text=text or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        )

    async def _run(self, requests, sampling, done, desc):
        sem = asyncio.Semaphore(self.cfg.concurrency)
        limiter = _RateLimiter(self.cfg.requests_per_minute, self.cfg.tokens_per_minute)
        client = self._client()
        state = {"conn_errors": 0}
        bar = tqdm(total=len(requests), desc=desc, unit="req")

        async def one(j: int, request: Request) -> None:
            async with sem:
                est = estimated_prompt_tokens(request) + (request.max_tokens or sampling["max_tokens"])
                await limiter.wait(est)
                response = await self._call(client, request, sampling)
                # Recorded before the slot is released: with concurrency 1, nothing is sent while an
                # earlier answer is unsaved, so a crash never costs an answered request.
                done(j, response)
                bar.update(1)
                state["conn_errors"] = state["conn_errors"] + 1 if response.error == "connection_error" else 0
                if state["conn_errors"] >= max(8, self.cfg.concurrency):
                    raise FatalRequestError(
                        f"cannot reach {redact.url(self.cfg.base_url) or 'the OpenAI API'}: "
                        f"{state['conn_errors']} requests in a row failed to connect after retries"
                    )

        tasks = [asyncio.create_task(one(j, r)) for j, r in enumerate(requests)]
        try:
            for fut in asyncio.as_completed(tasks):
                await fut
        finally:
            bar.close()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()

    def run(self, requests: list[Request], sampling: dict, done: Callable[[int, Response], None], desc: str) -> None:
        asyncio.run(self._run(requests, sampling, done, desc))
