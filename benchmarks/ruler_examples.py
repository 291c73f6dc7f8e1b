"""CPU time lm-eval spends building RULER's examples, per task and length, before a model is asked anything.

    python benchmarks/ruler_examples.py [--tasks niah_single_1 ruler_cwe ...] [--lengths 4096 32768]
                                        [--tokenizer pkg://mistral_common/data/tokenizer.model.v1]

`in2 eval` runs lm-eval once per model and length, and lm-eval builds every task's 500 examples of that length
on the CPU (sizing each with the tokenizer) while a managed server waits. Each line gives one task at one
length: the CPU seconds and wall seconds of building it, and the examples built. The default tasks are the
six that need no download. RESULTS.md (Evaluation) holds the figures.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from in2.evaluation.tasks import RULER_OFFLINE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(RULER_OFFLINE))
    parser.add_argument("--lengths", nargs="+", type=int, default=[4096, 32768])
    parser.add_argument("--tokenizer", default="pkg://mistral_common/data/tokenizer.model.v1")
    args = parser.parse_args()

    import lm_eval
    from lm_eval.tasks import TaskManager, get_task_dict

    from in2.assets import resolve
    from in2.evaluation.ruler_data import lm_eval_reads
    from in2.tokenizer import staged

    folder = Path(lm_eval.__file__).parent / "tasks" / "ruler"
    tokenizer = staged(Path(resolve(args.tokenizer)))  # a folder AutoTokenizer loads (a Mistral .model staged once)
    with lm_eval_reads({}):  # the offline tasks: no download, no punkt_tab fetch at import
        if any(t.startswith("niah") for t in args.tasks):
            start = time.process_time()
            from lm_eval.tasks.ruler import prepare_niah  # noqa: F401 (its word list: paid once per process)

            print(f"import of lm-eval's NIAH module: {time.process_time() - start:.1f} CPU s", flush=True)
        for length in args.lengths:
            for task in args.tasks:
                manager = TaskManager(
                    include_path=str(folder),
                    include_defaults=False,
                    metadata={"max_seq_lengths": [length], "tokenizer": str(tokenizer)},
                )
                cpu, wall, load = time.process_time(), time.perf_counter(), os.getloadavg()[0]
                built = get_task_dict([task], manager)[task]
                n = len(built.dataset["test"])
                print(
                    f"| {task} | {length} | {n} examples | {time.process_time() - cpu:.1f} CPU s | "
                    f"{time.perf_counter() - wall:.1f} s wall | load {load:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
