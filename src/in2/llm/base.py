"""What the engine and every backend share: a request, its response, the Backend protocol and the
registry of backends by name (the value of `generator.backend`).

Adding a backend is one new module with a class that follows `Backend`, plus one line in BACKENDS
(or `register(name, cls)` from outside in2).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from in2.errors import ConfigError

if TYPE_CHECKING:
    from in2.llm.cache import Cache
    from in2.llm.config import GeneratorConfig


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
    billed_prompt_tokens: int | None = None
    """Prompt tokens of every attempt that may have been billed (retried empty replies, timeouts counted at
    their estimate), failed or not; None: `prompt_tokens` (one attempt)."""
    billed_completion_tokens: int | None = None
    """Completion tokens of those attempts (a timed-out one counted as max_tokens); None: `completion_tokens`."""
    detail: str | None = None
    """The server's one-line reason for an error (e.g. `insufficient_quota`), for the stop message."""

    @property
    def billed(self) -> tuple[int, int]:
        """(prompt, completion) tokens this request may have cost, over all its attempts."""
        if self.cached:
            return 0, 0
        p = self.prompt_tokens if self.billed_prompt_tokens is None else self.billed_prompt_tokens
        c = self.completion_tokens if self.billed_completion_tokens is None else self.billed_completion_tokens
        return p, c

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


class FatalRequestError(RuntimeError):
    """The backend cannot answer any request (bad key, unknown model, unreachable server): stop the run."""


class BatchPending(RuntimeError):
    """`batch_files`: request files are written and wait for their outputs; the message says what to run."""


class Backend(Protocol):
    """Answers requests for one generator section. The engine asks the class methods without building
    the backend (building one may load a model), and hands `run` only what its cache lacks."""

    local: ClassVar[bool]
    """True: runs the weights at `generator.model` in this process. False: asks a server at
    `generator.base_url` with the key named by `generator.api_key_env`."""
    sampling_fields: ClassVar[tuple[str, ...]]
    """Generator fields it honours besides temperature, top_p and max_tokens; part of every cache key
    when set."""

    def __init__(self, cfg: GeneratorConfig) -> None: ...

    @classmethod
    def slots(cls, cfg: GeneratorConfig) -> int:
        """Requests it works on at once (the engine checks budgets between slices of a few of these)."""
        ...

    @classmethod
    def model_id(cls, cfg: GeneratorConfig, cache: Cache) -> str:
        """What answers, for request cache keys: a model retrained at the same place must get a new one."""
        ...

    def run(self, requests: list[Request], sampling: dict, done: Callable[[int, Response], None], desc: str) -> None:
        """Answer every request, calling `done(index, response)` as each answer arrives; a failed request
        is a Response with `error` set, never an exception (unless the whole run cannot go on)."""
        ...


BACKENDS: dict[str, str | type[Backend]] = {
    "openai": "in2.llm.openai_backend:OpenAIBackend",
    "openai_batch": "in2.llm.batch_backend:BatchBackend",
    "batch_files": "in2.llm.batch_backend:BatchFilesBackend",
    "transformers": "in2.llm.local_backend:LocalBackend",
}
"""Backends by name: a class, or `module:Class`, imported when first asked for."""


def register(name: str, backend: str | type[Backend]) -> None:
    """Make `backend` (a class or `module:Class`) available as `generator.backend: name`."""
    BACKENDS[name] = backend


def backend_class(name: str) -> type[Backend]:
    """The class registered as `name`; ConfigError naming generator.backend for an unknown name."""
    entry = BACKENDS.get(name)
    if entry is None:
        raise ConfigError(f"generator.backend: {name!r} is not one of {' or '.join(map(repr, BACKENDS))}")
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = BACKENDS[name] = getattr(importlib.import_module(module), attr)
    return entry
