"""`python -m tests.batch_run URL CACHE_DIR N [field=value ...]`: answer N canned QA prompts through the
engine with generator.backend openai_batch (or the one named), then print one JSON line: the sha256 of
the answers in order, and how many failed. For the kill -9 schedules of tests/test_batch.py."""

import hashlib
import json
import sys

from in2.llm import Engine, Request
from in2.llm.config import GeneratorConfig


def prompts(n: int) -> list[Request]:
    return [
        Request.user(f"### Context ###\nText {i} says that item {i} weighs {i * 7 % 101} grams in all.\n\nReply with")
        for i in range(n)
    ]


def die_after(puts: int) -> None:
    import os
    import signal

    from in2.llm.cache import Cache

    put, count = Cache.put, [0]

    def dying_put(self, *args, **kwargs):
        count[0] += 1
        if count[0] > puts:
            os.kill(os.getpid(), signal.SIGKILL)
        put(self, *args, **kwargs)

    Cache.put = dying_put


def main() -> None:
    url, cache, n, *fields = sys.argv[1:]
    extra = {}
    for f in fields:
        if f.startswith("die_after_puts="):  # kill -9 this process while it puts answers into the cache
            die_after(int(f.split("=")[1]))
            continue
        k, v = f.split("=", 1)
        extra[k] = v if k == "backend" else json.loads(v)
    cfg = GeneratorConfig(
        **{
            "backend": "openai_batch",
            "model": "canned",
            "base_url": url,
            "gguf_file": None,
            "cache_dir": cache,
            "batch_poll_s": 0.01,
            "max_retries": 0,
            **extra,
        }
    )
    engine = Engine(cfg, job="batch test")
    out = engine.generate(prompts(int(n)))
    engine.close()
    text = "\n".join(r.text or "" for r in out)
    failed = sorted({r.error for r in out if r.error})
    print(
        json.dumps(
            {
                "sha256": hashlib.sha256(text.encode()).hexdigest(),
                "failed": failed,
                "failures": sum(r.error is not None for r in out),
                "usage": engine.usage.to_json(cfg),
            }
        )
    )


if __name__ == "__main__":
    main()
