"""VaL probe sets at 64K and 128K tokens: how many positions a context holds, whether a pool is long
enough to fill it, and what building one costs.

    python benchmarks/probe_lengths.py --film /work/shared/film/pieces [--lengths 65536 131072]

For each pool (FILM's released pieces, in2's offline builtin pools) and task, the items of one set are
chosen per length with Mistral-Nemo's Tekken tokenizer and its prompt format, as `in2 eval` chooses them
(in2.evaluation.probing.build.Builder.fill), and the size of the probe file that set makes is worked out
(each of its rows holds the whole prompt, as in FILM's files) without writing it. Prints one table row
per set; RESULTS.md holds the figures.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--film", help="folder with FILM's VaLProbing pieces/*.jsonl")
    parser.add_argument("--lengths", type=int, nargs="+", default=[65536, 131072])
    args = parser.parse_args()

    from in2.evaluation.probing.build import Builder, item_text, load_pool
    from in2.evaluation.tasks import PROBE_TASKS
    from in2.seeding import rng
    from in2.tokenizer import TokenizerConfig, load_tokenizer
    from tests.conftest import TEKKEN

    tok = load_tokenizer(TokenizerConfig(**TEKKEN))
    sources = (["film"] if args.film else []) + ["builtin"]
    print(
        "| pool | task | length | items (positions) per set | longest prompt | one set's probe file | "
        "pool items (tokens) | fill s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for source in sources:
        for task in PROBE_TASKS:
            pool, _ = load_pool(task, args.film if source == "film" else "builtin")
            builder = Builder(task, pool, tok, raw_template="[INST]{prompt}[/INST]")
            pool_tokens = sum(builder.item_tokens) + len(pool)  # items and one separator each
            for length in args.lengths:
                order = list(range(len(pool)))
                rng(0, "probe", task, length, 0).shuffle(order)  # set 0, as build_set draws it
                start = time.perf_counter()
                try:
                    chosen = builder.fill(order, length)  # what build_set does before writing one row per position
                except ValueError as e:
                    print(f"| {source} | {task} | {length:,} | {e} | | | {len(pool):,} | |")
                    continue
                seconds = time.perf_counter() - start
                context = builder.sep.join(item_text(task, pool[i]) for i in chosen)
                prompt = builder.prompt(context, pool[chosen[-1]])
                size = len(chosen) * len(prompt.encode())  # every row stores the whole prompt (FILM's layout)
                full = " (whole pool: too short)" if len(chosen) == len(pool) else ""
                print(
                    f"| {source} | {task} | {length:,} | {len(chosen):,}{full} | {builder.measure(chosen):,} | "
                    f"{size / 2**30:.2f} GiB | {len(pool):,} ({pool_tokens / 1e3:.0f}K) | {seconds:.1f} |"
                )
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
