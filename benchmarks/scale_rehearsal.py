"""Scale rehearsal: the whole `in2 synth` + `in2 merge` pipeline at growing sizes, projected to FILM-7B.

    python benchmarks/scale_rehearsal.py [--rows 1000 10000 50000] [--shards 4] [--workdir DIR] [--no-write]

For each size: an offline corpus of distinct texts (paragraphs of Python's reference documentation,
`pydoc_data`, recombined with a seed) and an instruction set; the FILM-7B recipe's settings that
matter for scale (Mistral-7B's tokenizer from mistral-common, contexts of 4K-32K tokens within
32,768, the paper's mix of parts scaled to the size, openai backend at concurrency 64) against the
canned server of tests/openai_server.py on 127.0.0.1, which answers at once with grounded QA. Each
shard is one `in2 synth` process, run one after another, then one `in2 merge` process; per stage:
wall time, CPU time, peak RSS (the process's own, from wait4) and disk. The projection to FILM-7B's
1.75M rows uses the per-row figures of the largest size. Prints a table and appends it to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import MISTRAL  # noqa: E402
from tests.openai_server import CannedServer, canned_generator  # noqa: E402

FILM_ROWS = 1_750_000
FILM_MIX = {"fine_grained": 1_100_000, "integration": 300_000, "short": 150_000, "general": 200_000}


def paragraphs() -> list[str]:
    """Paragraphs of 20+ words from Python's reference documentation (offline, stdlib)."""
    from in2.synth.config import CorpusConfig
    from in2.synth.corpus import iter_texts

    out = []
    for t in iter_texts(CorpusConfig(source="builtin:pydoc")):
        out += [p for p in t.text.split("\n") if len(p.split()) >= 20]
    return out


def write_inputs(workdir: Path, rows: int, shards: int, url: str, **context) -> Path:
    """Corpus, instruction data and the synth config of a rehearsal of `rows` rows; returns the config."""
    mix = {part: round(rows * n / FILM_ROWS) for part, n in FILM_MIX.items()}
    mix["fine_grained"] += rows - sum(mix.values())
    pool = paragraphs()
    rng = random.Random(0)
    qa = mix["fine_grained"] + mix["integration"] + mix["short"]
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "corpus.jsonl", "w") as f:  # every text once: enough for the QA sources and fillers
        for i in range(int(qa * 1.6) + 300 * shards):
            text = "\n".join(rng.sample(pool, rng.randint(3, 10)))
            f.write(json.dumps({"id": f"text-{i}", "text": text}) + "\n")
    with open(workdir / "instructions.jsonl", "w") as f:
        for i in range(int(mix["general"] * 1.2) + 10 * shards):
            p = rng.choice(pool)
            instruction = f"Explain this passage of the Python reference: {' '.join(p.split()[:12])} ..."
            f.write(json.dumps({"id": f"inst-{i}", "instruction": instruction, "response": p}) + "\n")
    cfg = {
        "corpus": {"source": str(workdir / "corpus.jsonl"), "filler_pool_texts": 300},
        "tokenizer": MISTRAL,
        "generator": canned_generator(
            url, cache_dir=str(workdir / "cache"), concurrency=64, api_key_env="IN2_REHEARSAL_KEY"
        ),
        "qa": {"oversample": 1.15},
        "context": {
            "min_context_tokens": 4096,
            "max_context_tokens": 32000,
            "max_length": 32768,
            "verify_rows": 256,
            **context,
        },
        "mixture": {**mix, "validation_rows": max(1, rows // 1000)},
        "general": {"source": str(workdir / "instructions.jsonl"), "instruction_field": "instruction"},
        "output_dir": str(workdir / "release"),
    }
    path = workdir / "synth.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(cmd: list[str]) -> dict:
    """Run a command to its end; wall and CPU seconds and the peak RSS of that process alone."""
    env = {**os.environ, "IN2_REHEARSAL_KEY": "local", "PYTHONPATH": str(ROOT / "src"), "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024}


def disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def uncompressed(path: Path) -> int:
    """Bytes of a parquet file's data before compression (from its footer)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))


def long_context_mean(files: list[Path]) -> float:
    """Mean context tokens of the long rows (one column read, not the rows)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    lengths = [
        pq.read_table(f, columns=["context_tokens"])["context_tokens"]
        for f in files
        if f.parent.name in ("fine_grained", "integration")
    ]
    return round(sum(pc.sum(c).as_py() or 0 for c in lengths) / max(1, sum(len(c) for c in lengths)))


def rehearse(rows: int, shards: int, workdir: Path, overrides: tuple[str, ...] = ()) -> dict:
    """One size: every shard, then the merge; figures per stage. `overrides` go to every shard."""
    in2 = [sys.executable, "-m", "in2.cli"]
    with CannedServer() as server:
        config = write_inputs(workdir, rows, shards, server.url)
        loads = [os.getloadavg()[0]]
        shard_runs = []
        for i in range(shards):
            shard_runs.append(
                run(
                    [
                        *in2,
                        "synth",
                        "--config",
                        str(config),
                        "--num-shards",
                        str(shards),
                        "--shard-index",
                        str(i),
                        *overrides,
                    ]
                )
            )
            loads.append(os.getloadavg()[0])
        shard_bytes = disk(workdir / "release.shards")
        merged = run([*in2, "merge", "--config", str(config)])
        loads.append(os.getloadavg()[0])
    manifest = json.loads((workdir / "release" / "manifest.json").read_text())
    files = sorted((workdir / "release" / "data").rglob("*.parquet"))
    return {
        "rows": sum(manifest["splits"].values()),
        "requested": rows,
        "shards": shards,
        "shard_rows": [
            sum(json.loads((d / "manifest.json").read_text())["counts"]["rows"].values())
            for d in sorted((workdir / "release.shards").iterdir())
        ],
        "shard": shard_runs,
        "merge": merged,
        "requests": len(server.bodies),
        "disk": {
            "corpus": disk(workdir / "corpus.jsonl"),
            "cache": disk(workdir / "cache"),
            "shards": shard_bytes,
            "release": disk(workdir / "release"),
        },
        "release_uncompressed": sum(uncompressed(f) for f in files),
        "files": len(files),
        "largest_file": max((f.stat().st_size for f in files), default=0),
        "long_context_tokens_mean": long_context_mean(files),
        "load": [round(x, 1) for x in loads],
        "content_hash": manifest["content_hash"],
    }


def report(results: list[dict]) -> list[str]:
    mib = 1 << 20
    lines = [
        "| rows | shards | shard wall (sum) | shard CPU | peak RSS per shard (rows each) | merge wall | merge CPU | "
        "merge peak RSS | shards on disk | release on disk | load (1-min avg) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r["shard"]
        lines.append(
            f"| {r['rows']:,} | {r['shards']} | {sum(x['wall_s'] for x in s):.0f} s | {sum(x['cpu_s'] for x in s):.0f} s | "
            + ", ".join(f"{x['rss_mib']:,.0f} MiB ({n:,})" for x, n in zip(s, r["shard_rows"], strict=True))
            + f" | {r['merge']['wall_s']:.0f} s | {r['merge']['cpu_s']:.0f} s | {r['merge']['rss_mib']:,.0f} MiB | "
            f"{r['disk']['shards'] / mib:,.0f} MiB | {r['disk']['release'] / mib:,.0f} MiB, "
            f"{r['release_uncompressed'] / mib:,.0f} MiB uncompressed ({r['files']} files, largest "
            f"{r['largest_file'] / mib:,.0f} MiB) | {min(r['load'])}-{max(r['load'])} |"
        )
    big = results[-1]
    per_row = {
        "shard_cpu": sum(x["cpu_s"] for x in big["shard"]) / big["rows"],
        "merge_wall": big["merge"]["wall_s"] / big["rows"],
        "shards_disk": big["disk"]["shards"] / big["rows"],
        "release_disk": big["disk"]["release"] / big["rows"],
        "release_raw": big["release_uncompressed"] / big["rows"],
    }
    lines += [
        "",
        f"Projection (estimate) to FILM-7B's {FILM_ROWS:,} rows from the {big['rows']:,}-row run: shard stage "
        f"{per_row['shard_cpu'] * FILM_ROWS / 3600:,.0f} CPU-hours of in2 itself (the generator's own time not "
        f"included: the server here answers at once), merge {per_row['merge_wall'] * FILM_ROWS / 3600:.1f} h on one "
        f"core, shards {per_row['shards_disk'] * FILM_ROWS / 1e9:,.0f} GB and release "
        f"{per_row['release_disk'] * FILM_ROWS / 1e9:,.0f} GB on disk (this corpus, recombined paragraphs, "
        f"compresses well; {per_row['release_raw'] * FILM_ROWS / 1e9:,.0f} GB uncompressed); merge peak RSS "
        f"{max(r['merge']['rss_mib'] for r in results):,.0f} MiB at most over all sizes.",
    ]
    return lines


def _record(text: str, section: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when run through runpy
    from results_md import record

    record(text, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10_000, 50_000])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workdir", help="where to build (default: a temporary folder, removed after each size)")
    parser.add_argument(
        "--set", nargs="*", default=[], help="overrides for every shard, e.g. mixture.sort_buffer_mb=64"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    results = []
    for rows in args.rows:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="in2-rehearsal-")) / f"rows-{rows}"
        if workdir.exists():
            shutil.rmtree(workdir)
        results.append(rehearse(rows, args.shards, workdir, tuple(args.set)))
        print(json.dumps(results[-1]), flush=True)
        shutil.rmtree(workdir)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    lines = report(results)
    print("\n".join(lines))
    if not args.no_write:
        command = (
            f"{machine}: `python benchmarks/scale_rehearsal.py --rows {' '.join(map(str, args.rows))} "
            f"--shards {args.shards}{' --set ' + ' '.join(args.set) if args.set else ''}`"
        )
        _record("\n".join(["", command, "", *lines]), "Scale rehearsal")


if __name__ == "__main__":
    main()
