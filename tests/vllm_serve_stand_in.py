"""A stand-in for `vllm serve` (vLLM needs a GPU): takes vLLM's command line, serves the project's test
server (tests/openai_server.py) on --host/--port with the model names vLLM would list, and records how it
was called. For `in2 eval`'s managed servers (in2.evaluation.serve), as `serve.command`.

Test switches (not vLLM's): --fail-at-start (exit 1 after a line of log), --never-ready (sleep, never
listen), --ignore-sigterm, --latency S (seconds per answer)."""

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.openai_server import CannedServer  # noqa: E402


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("verb", choices=["serve"])
    p.add_argument("model")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--served-model-name")
    p.add_argument("--enable-lora", action="store_true")
    p.add_argument("--lora-modules", nargs="*", default=[])
    p.add_argument("--fail-at-start", action="store_true")
    p.add_argument("--never-ready", action="store_true")
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--latency", type=float, default=0.0)
    args, rest = p.parse_known_args(argv)
    print(f"stand-in pid {os.getpid()} argv {json.dumps(argv)}", flush=True)
    if key := os.environ.get("VLLM_API_KEY"):  # vLLM echoes its settings, the key among them
        print(f"non-default args: {{'api_key': [{key!r}]}} (sha256 {hashlib.sha256(key.encode()).hexdigest()[:12]})")
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.fail_at_start:
        print("ValueError: the model does not fit: --max-model-len 131072 needs 16 GiB of KV cache", flush=True)
        return 1
    if args.never_ready:
        while True:
            time.sleep(1)
    names = [args.served_model_name or args.model]
    if args.enable_lora:
        names += [m.split("=", 1)[0] for m in args.lora_modules]
    server = CannedServer(port=args.port, models=tuple(names), latency_s=args.latency)

    def log(answered: int) -> bool:
        print(f"request {answered + 1}", flush=True)
        return False

    server.on_request = log
    with server:
        print(f"serving {names} at {server.url}", flush=True)
        while True:
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
