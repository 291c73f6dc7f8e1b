"""Generation throughput of in2's engine against a local OpenAI-compatible server with a fixed latency.

    python benchmarks/generation_throughput.py [--latency 0.5] [--concurrency 16 64 256]

For each concurrency C, rounds x C distinct requests go to a server on 127.0.0.1 (its own process)
that answers each after L seconds; the ideal rate is C/L requests per second, and the figure is the achieved share of it
(target >= 0.9). Then the same requests again: all from the cache, no request sent, and the time as a
share of the first run (target < 5%). The openai package is imported before the clock starts: its
one-time import (~0.9 s on 2 cores) is not throughput. Prints the figures and appends them to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402, F401  (imported before timing: its one-time import takes ~0.9 s here)

from in2.llm import Engine, Request  # noqa: E402
from in2.llm.config import GeneratorConfig  # noqa: E402
from tests.openai_server import CannedServer  # noqa: E402


def _serve(latency: float, urls, counts) -> None:
    with CannedServer(latency_s=latency) as server:
        urls.put(server.url)
        while True:
            counts.put(len(server.bodies)) if not counts.full() else None
            time.sleep(0.05)


class Server:
    """The canned server in its own process, so it does not share the client's interpreter lock."""

    def __init__(self, latency: float):
        import multiprocessing as mp

        self.urls, self.counts = mp.Queue(), mp.Queue(maxsize=1)
        self.proc = mp.Process(target=_serve, args=(latency, self.urls, self.counts), daemon=True)

    def __enter__(self):
        self.proc.start()
        self.url = self.urls.get(timeout=30)
        return self

    def requests_seen(self) -> int:
        time.sleep(0.2)
        n = 0
        while not self.counts.empty():
            n = self.counts.get()
        return n if n else self.counts.get(timeout=5)

    def __exit__(self, *exc):
        self.proc.terminate()


def measure(latency: float, concurrency: int, rounds: int) -> dict:
    requests = [Request.user(f"benchmark prompt {i}") for i in range(rounds * concurrency)]
    with Server(latency) as server, tempfile.TemporaryDirectory() as cache:
        cfg = GeneratorConfig(
            backend="openai",
            model="bench",
            base_url=server.url,
            concurrency=concurrency,
            max_retries=0,
            timeout_s=60,
            cache_dir=cache,
        )
        os.environ.setdefault("OPENAI_API_KEY", "EMPTY")
        engine = Engine(cfg)
        start = time.perf_counter()
        first = engine.generate(requests, desc=f"C={concurrency}")
        elapsed = time.perf_counter() - start
        assert all(r.error is None for r in first), "requests failed"
        sent = server.requests_seen()
        start = time.perf_counter()
        engine.generate(requests, desc="cached")
        cached = time.perf_counter() - start
        engine.close()
        resent = server.requests_seen() - sent
    ideal = len(requests) * latency / concurrency
    return {
        "C": concurrency,
        "requests": len(requests),
        "seconds": elapsed,
        "share_of_ideal": ideal / elapsed,
        "cached_seconds": cached,
        "cached_share": cached / elapsed,
        "cached_requests_sent": resent,
    }


def _record(text: str, section: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when run through runpy
    from results_md import record

    record(text, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--rounds", type=int, default=8, help="requests = rounds x concurrency")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    rows = []
    for c in args.concurrency:
        r = measure(args.latency, c, args.rounds)
        rows.append(
            f"| generation throughput, L={args.latency}s, C={c} | {machine} | `python benchmarks/generation_throughput.py"
            f" --latency {args.latency} --concurrency {c} --rounds {args.rounds}` | {r['requests']} requests in {r['seconds']:.2f} s = "
            f"{r['share_of_ideal']:.2f} of ideal C/L; cached rerun {r['cached_seconds']:.3f} s "
            f"({100 * r['cached_share']:.1f}% of the first run), {r['cached_requests_sent']} requests sent |"
        )
        print(rows[-1])
    if not args.no_write:
        _record("\n".join(rows), "Generation")


if __name__ == "__main__":
    main()
