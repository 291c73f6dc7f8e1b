"""Long-context assembly at scale: fidelity to the paper and throughput, for 10,000 contexts of 4K-32K
Mistral tokens built from the offline corpus, or contexts of 4K-128K Tekken (Mistral-Nemo) tokens
built from the Python standard library's sources (the pydoc corpus is too small to fill a 128K
context with distinct segments); one context in five is of type (b). No network.

    python benchmarks/assembly_throughput.py [--contexts 10000]
    python benchmarks/assembly_throughput.py --contexts 2000 --max-context-tokens 130304   # 128K, Tekken

Fidelity: contexts per length bucket (equal), the share of contexts within
`context.length_tolerance_tokens` of their drawn target, and the Kolmogorov-Smirnov statistic of key
positions against uniform for type (a) and type (b) separately. Throughput: context tokens per
second per core, and peak memory; segmentation (tokenizing every segment once) is timed apart from
assembly (choosing fillers and positions, cutting the last filler of a gap, joining, counting).
Prints the figures and appends them to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _record(text: str, section: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/, also when run through runpy
    from results_md import record

    record(text, section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, default=10000)
    parser.add_argument(
        "--max-context-tokens", type=int, default=32000, help="above 32000: Tekken tokens, stdlib corpus"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    long = args.max_context_tokens > 32000

    from in2.synth.assemble import Assembler, FillerPool
    from in2.synth.config import ContextConfig, CorpusConfig
    from in2.synth.corpus import iter_texts
    from in2.synth.segment import Segmenter
    from in2.tokenizer import TokenizerConfig, load_tokenizer
    from tests.conftest import MISTRAL, TEKKEN, write_stdlib_corpus
    from tests.test_assemble import fidelity, long_items

    tok = load_tokenizer(TokenizerConfig(**(TEKKEN if long else MISTRAL)))
    if long:
        with tempfile.TemporaryDirectory() as folder:
            texts = list(iter_texts(CorpusConfig(source=str(write_stdlib_corpus(Path(folder), 5_000_000)))))
    else:
        texts = list(iter_texts(CorpusConfig(source="builtin:pydoc")))
    start = time.perf_counter()
    sources = Segmenter(tok, 128, 2048)(texts, Counter())  # the FILM recipe's segments
    segment_s = time.perf_counter() - start
    segment_tokens = sum(sum(s.tokens) for s in sources)

    max_length = 131072 if long else 32768
    cfg = ContextConfig(
        min_context_tokens=4096, max_context_tokens=args.max_context_tokens, num_length_buckets=8, max_length=max_length
    )
    asm = Assembler(tok, cfg, seed=1)
    items = long_items(asm, sources, args.contexts)
    start = time.perf_counter()
    rows = list(asm.rows(items, FillerPool(sources)))
    assemble_s = time.perf_counter() - start
    tokens = sum(r["context_tokens"] for r in rows)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    f = fidelity(asm, rows)
    buckets = [f["buckets"][b] for b in range(cfg.num_length_buckets)]
    spread = (max(buckets) - min(buckets)) / (len(rows) / len(buckets))
    crit = {t: 1.36 / n**0.5 for t, n in f["positions"].items()}  # 5% critical values (independent keys)
    tol = cfg.length_tolerance_tokens
    print(f"contexts per bucket {buckets} (max - min = {spread:.2%} of an even share)")
    print(f"within {tol} tokens of the target: {f['within_tolerance']:.2%}; dropped: {len(items) - len(rows)}")
    for t, ks in f["ks"].items():
        print(
            f"KS of key positions vs uniform, {t}: {ks:.4f} over {f['positions'][t]} keys (5% critical {crit[t]:.4f})"
        )
    machine = f"{platform.machine()}, {os.cpu_count()} cores (one used)"
    flag = f" --max-context-tokens {args.max_context_tokens}" if args.max_context_tokens != 32000 else ""
    cmd = f"`python benchmarks/assembly_throughput.py --contexts {args.contexts}{flag}`"
    span = f"{cfg.min_context_tokens:,}-{cfg.max_context_tokens:,}"
    what = f"{span} {'Tekken' if long else 'Mistral'} tokens (1 in 5 type b), fill to target"
    line = (
        f"| assembly, {len(rows):,} contexts of {what} | {machine} | {cmd} | "
        f"per bucket {'/'.join(map(str, buckets))}; {f['within_tolerance']:.2%} within {tol} tokens of the "
        f"target; KS vs uniform (a) {f['ks']['fine_grained']:.4f} over {f['positions']['fine_grained']:,} keys, "
        f"(b) {f['ks']['integration']:.4f} over {f['positions']['integration']:,} keys; "
        f"{tokens / 1e6:.0f}M context tokens in {assemble_s:.1f} s = {tokens / assemble_s / 1e6:.1f}M tokens/s; "
        f"longest context {max(r['context_tokens'] for r in rows):,} tokens; "
        f"segmenting {len(texts)} texts ({segment_tokens / 1e6:.2f}M tokens) once: {segment_s:.1f} s; "
        f"peak RSS {peak_mib:,.0f} MiB (rows held in memory) |"
    )
    print(line)
    if not args.no_write:
        _record(line, "Assembly")


if __name__ == "__main__":
    main()
