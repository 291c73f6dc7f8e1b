"""The batch path (generator.backend openai_batch) for many requests against the test server's batch API.

    python benchmarks/batch_throughput.py [--requests 10000 100000] [--no-write]

For each count N, in a fresh process: N distinct QA prompts (~1.6 KB each, the size of in2's fine-grained
prompt) through in2's engine with the openai_batch backend, against tests/openai_server.py in its own
process (its CPU is not the client's): request files written, uploaded, submitted, polled every 0.05 s,
outputs downloaded and every answer put into the answer cache. Then the same requests again with the
answer cache removed and the batch folder kept: nothing is sent, every answer is read back from the
downloaded outputs (the time to ingest). Figures: client CPU per request (process time over N), wall
time of each part, peak RSS, files and bytes written. Then the backend alone (no engine, no cache; the
requests built on demand from their index): its peak RSS over N is what the batch path itself holds.
Prints the rows and records them in benchmarks/RESULTS.md (section "Batch generation").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FILLER = (
    "The committee met on a grey morning to weigh the proposal for a new bridge across the river, "
    "which had been debated for more than a decade by engineers, merchants and the town council. "
)


def prompt(i: int) -> str:
    passage = f"Record {i}: the shipment numbered {i * 7919 % 1_000_003} arrived at dock {i % 97}. " + FILLER * 8
    return f"Write one question and its answer.\n\n### Context ###\n{passage}\n\nReply with Question: and Answer:"


class Prompts(Sequence):
    """N requests, each built when asked for (the backend then holds only what it keeps itself)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        from in2.llm import Request

        if not 0 <= i < self.n:
            raise IndexError(i)
        return Request.user(prompt(i))


def _serve(urls) -> None:
    from tests.openai_server import CannedServer

    with CannedServer() as server:
        server.slow_polls = 2
        urls.put(server.url)
        while True:
            time.sleep(1)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(url: str, n: int, mode: str) -> dict:
    """One measurement in this (fresh) process."""
    import openai  # noqa: F401  (imported before the clock)

    from in2.llm import Engine
    from in2.llm import batch_backend as bb
    from in2.llm.config import GeneratorConfig

    work = Path(tempfile.mkdtemp(prefix="in2-batch-bench-"))
    cfg = GeneratorConfig(
        backend="openai_batch", model="bench", base_url=url, gguf_file=None, cache_dir=str(work / "cache"),
        batch_poll_s=0.05, max_retries=2, timeout_s=600,
    )  # fmt: skip
    os.environ.setdefault("OPENAI_API_KEY", "EMPTY")
    timers = {"write": 0.0, "upload_submit": 0.0, "download": 0.0}
    for name, attr in (("write", "write"), ("upload_submit", "submit"), ("download", "download")):
        original = getattr(bb.BatchBackend, attr)

        def timed(self, *a, _f=original, _n=name, **k):
            t = time.perf_counter()
            try:
                return _f(self, *a, **k)
            finally:
                timers[_n] += time.perf_counter() - t

        setattr(bb.BatchBackend, attr, timed)
    base_rss = rss_mb()
    out: dict = {"n": n, "mode": mode, "rss_after_imports_mb": round(base_rss, 1)}
    if mode == "backend":
        backend = bb.BatchBackend(cfg)
        answered = [0]

        def done(i, r):
            answered[0] += r.error is None

        cpu, wall = time.process_time(), time.perf_counter()
        backend.run(Prompts(n), {"temperature": 0.0, "top_p": 1.0, "max_tokens": 512}, done, "bench")
        out.update(
            cpu_s=time.process_time() - cpu,
            wall_s=time.perf_counter() - wall,
            answered=answered[0],
            peak_rss_mb=round(rss_mb(), 1),
        )
    else:
        requests = list(Prompts(n))
        engine = Engine(cfg, job="bench")
        cpu, wall = time.process_time(), time.perf_counter()
        responses = engine.generate(requests, desc="bench")
        out.update(cpu_s=time.process_time() - cpu, wall_s=time.perf_counter() - wall, peak_rss_mb=round(rss_mb(), 1))
        out["answered"] = sum(r.error is None for r in responses)
        del responses
        engine.close()
        folder = bb.batch_dir(cfg)
        files = [p for p in folder.iterdir() if p.is_file()]
        out.update(
            files=len(files), bytes=sum(p.stat().st_size for p in files), batches=len(list(folder.glob("*.json")))
        )
        for p in Path(cfg.cache_dir).glob("requests.sqlite*"):  # the answers lost; the downloaded outputs kept
            p.unlink()
        engine = Engine(cfg, job="bench")
        cpu, wall = time.process_time(), time.perf_counter()
        again = engine.generate(requests, desc="ingest")
        out.update(ingest_cpu_s=time.process_time() - cpu, ingest_wall_s=time.perf_counter() - wall)
        out["ingested"] = sum(r.error is None for r in again)
        engine.close()
    out.update({f"{k}_s": round(v, 3) for k, v in timers.items()})
    shutil.rmtree(work)
    return out


def measure(url: str, n: int, mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", url, str(n), mode],
        capture_output=True,
        text=True,
        env={**os.environ, "TQDM_DISABLE": "1"},
    )
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _record(text: str, section: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when run through runpy
    from results_md import record

    record(text, section)


def main(argv: list[str] | None = None) -> list[dict]:
    import multiprocessing as mp

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--note", default="", help="said in each row's machine column (e.g. other load)")
    parser.add_argument("--child", nargs=3, metavar=("URL", "N", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        url, n, mode = args.child
        print(json.dumps(child(url, int(n), mode)))
        return []
    urls = mp.Queue()
    server = mp.Process(target=_serve, args=(urls,), daemon=True)
    server.start()
    try:
        url = urls.get(timeout=60)
        results = [measure(url, n, mode) for mode in ("engine", "backend") for n in args.requests]
    finally:
        server.terminate()
    machine = f"{platform.machine()}, {os.cpu_count()} cores{', ' + args.note if args.note else ''}"
    cmd = f"`python benchmarks/batch_throughput.py --requests {' '.join(map(str, args.requests))}`"
    rows = []
    for r in results:
        n = r["n"]
        if r["mode"] == "engine":
            figure = (
                f"{n:,} requests through the engine: client CPU {1e3 * r['cpu_s'] / n:.3f} ms per request "
                f"({n / r['cpu_s']:,.0f} requests/s of client work; wall {r['wall_s']:.1f} s: write {r['write_s']:.1f} s, "
                f"upload and submit {r['upload_submit_s']:.1f} s, download {r['download_s']:.1f} s), "
                f"{r['batches']} batches, {r['files']} files, {r['bytes'] / 1e6:,.0f} MB written; peak RSS "
                f"{r['peak_rss_mb']:,.0f} MB ({r['rss_after_imports_mb']:,.0f} MB after imports); ingest again from the "
                f"downloaded outputs into an empty cache: {r['ingest_wall_s']:.1f} s ({n / r['ingest_cpu_s']:,.0f} "
                f"requests/s of CPU); {r['answered']:,} answered, {r['ingested']:,} ingested"
            )
        else:
            figure = (
                f"{n:,} requests, the backend alone (requests built on demand, no cache): client CPU "
                f"{1e3 * r['cpu_s'] / n:.3f} ms per request, peak RSS {r['peak_rss_mb']:,.0f} MB "
                f"({r['rss_after_imports_mb']:,.0f} MB after imports); {r['answered']:,} answered"
            )
        rows.append(f"| batch path, {r['mode']}, N={n:,} | {machine} | {cmd} | {figure} |")
        print(rows[-1])
    if not args.no_write:
        _record("\n".join(rows), "Batch generation")
    return results


if __name__ == "__main__":
    main()
