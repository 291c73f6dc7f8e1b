"""The Slurm scripts as a lab submits them (issue 22, item 1), run with IN2_DRY_RUN=1 on CPU: the log folder a
fresh clone has, a resubmitted single shard, the accelerate config as a named option; and the corpus split that
reads each file of a streamed dataset by one shard only."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from in2 import cli
from in2.synth.config import SynthConfig
from in2.synth.corpus import split_for_shard, streamed_per_kept

ROOT = Path(__file__).resolve().parents[1]
SYNTH_SLURM = ROOT / "recipes/film-7b/synth.slurm"
LAUNCH_SLURM = ROOT / "accelerate_configs/launch.slurm"


def run(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.run(
        ["bash", str(script), *args], env={**clean, "IN2_DRY_RUN": "1", **env}, capture_output=True, text=True, cwd=ROOT
    )


@pytest.mark.parametrize("script", [SYNTH_SLURM, LAUNCH_SLURM], ids=lambda p: p.name)
def test_the_log_folder_exists_in_a_fresh_clone(script):
    """Slurm opens --output before the script runs: its folder must come with the repository."""
    (out,) = re.findall(r"^#SBATCH --output=(\S+)$", script.read_text(), re.M)
    folder = Path(out).parent
    assert (ROOT / folder).is_dir()
    if (ROOT / ".git").exists():  # a clone holds only tracked files
        tracked = subprocess.run(["git", "ls-files", str(folder)], cwd=ROOT, capture_output=True, text=True).stdout
        assert tracked.strip(), f"{folder}/ holds no tracked file: a fresh clone lacks it"


def synth_args(stdout: str) -> SynthConfig:
    """The SynthConfig the printed `in2 synth ...` command builds."""
    argv = shlex.split(stdout.strip().splitlines()[-1])
    assert argv[0] == ".venv/bin/in2" and argv[1] == "synth"
    args, rest = cli.build_parser().parse_known_args(argv[1:])
    assert not rest
    cfg = cli._load(SynthConfig, args)
    cfg.validate()
    return cfg


def test_a_single_resubmitted_shard_keeps_the_shard_count():
    """`sbatch --array=7 synth.slurm`: one task, the same shard 7 of 128 as in the first submission."""
    env = dict(SLURM_ARRAY_TASK_ID="7", SLURM_ARRAY_TASK_COUNT="1", SLURM_ARRAY_TASK_MIN="7", SLURM_ARRAY_TASK_MAX="7")
    p = run(SYNTH_SLURM, "--generator.base_url", "http://host:8000/v1", **env)
    assert p.returncode == 0, p.stderr
    assert not p.stderr
    cfg = synth_args(p.stdout)
    assert (cfg.num_shards, cfg.shard_index) == (128, 7)
    assert cfg.generator.cache_dir == ".cache/in2/llm/shard-7"
    assert cfg.generator.base_url == "http://host:8000/v1"
    assert cfg.output_dir == "data/in2-film-7b"


def test_the_synth_array_names_a_task_outside_the_shard_count_and_a_short_first_array():
    env = dict(SLURM_ARRAY_TASK_ID="130", SLURM_ARRAY_TASK_COUNT="131", SLURM_ARRAY_TASK_MIN="0")
    p = run(SYNTH_SLURM, **env, SLURM_ARRAY_TASK_MAX="130")
    assert p.returncode == 2 and "task 130 is not a shard of NUM_SHARDS=128" in p.stderr
    env = dict(SLURM_ARRAY_TASK_ID="3", SLURM_ARRAY_TASK_COUNT="100", SLURM_ARRAY_TASK_MIN="0")
    p = run(SYNTH_SLURM, **env, SLURM_ARRAY_TASK_MAX="99")
    assert p.returncode == 0 and "submit the others (--array=100-127) before merging" in p.stderr
    p = run(
        SYNTH_SLURM, **env, SLURM_ARRAY_TASK_MAX="99", NUM_SHARDS="100", CONFIG="recipes/mistral-nemo-12b/in2_data.yaml"
    )
    assert p.returncode == 0 and not p.stderr
    cfg = synth_args(p.stdout)
    assert (cfg.num_shards, cfg.shard_index, cfg.output_dir) == (100, 3, "data/in2-nemo-128k")
    p = run(SYNTH_SLURM)
    assert p.returncode != 0 and "run as an array job" in p.stderr


def test_in2_synth_refuses_a_shard_count_other_than_the_shards_already_built(tmp_path, capsys):
    out = tmp_path / "set"
    (tmp_path / "set.shards" / "shard-00003-of-00100").mkdir(parents=True)
    demo = str(ROOT / "recipes/demo/in2_data.yaml")
    argv = ["synth", "--config", demo, "--output-dir", str(out), "--num-shards", "128", "--shard-index", "3"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "holds shards of a run with 100 shards, this run has 128" in err and "NUM_SHARDS=100" in err


def launch(*args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    p = run(LAUNCH_SLURM, *args, **{"SLURM_NNODES": "16", "GLOBAL_BATCH": "128", **env})
    return p, (shlex.split(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else [])


def test_the_launcher_spans_all_nodes_at_the_fixed_global_batch():
    p, cmd = launch("recipes/film-7b/sft_full.yaml", "--seed", "1")
    assert p.returncode == 0, p.stderr
    assert "16 nodes x 8 GPUs = 128 processes, global batch 128" in p.stdout
    line = " ".join(cmd)
    for part in (
        "--num_machines 16",
        "--num_processes 128",
        "--machine_rank $SLURM_PROCID",
        "--config_file accelerate_configs/fsdp.yaml",
        "-m in2.train.sft",
        "--config recipes/film-7b/sft_full.yaml",
        "--global_batch_size 128 --seed 1",
    ):
        assert part in line
    prepare = p.stdout.strip().splitlines()[-2]  # run first, on this node, with all its CPUs
    assert prepare == ".venv/bin/in2 train --config recipes/film-7b/sft_full.yaml --prepare_only true --seed 1"


def test_the_launchers_prepare_step_runs_as_shipped(tmp_path, tiny_model, dataset_folder):
    """The preparation command launch.slurm runs before the job, with toy overrides, run as it prints it."""
    toy = ["--model_name_or_path", str(tiny_model), "--dataset_name", str(dataset_folder), "--dataset_config"]
    toy += ["default", "--output_dir", str(tmp_path / "out"), "--use_cpu", "true", "--bf16", "false"]
    p, _ = launch("recipes/film-7b/sft_full.yaml", *toy, VENV=str(Path(sys.executable).parent.parent))
    assert p.returncode == 0, p.stderr
    done = subprocess.run(["bash", "-c", p.stdout.strip().splitlines()[-2]], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    (prepared,) = (tmp_path / "out" / "prepared-data").iterdir()
    assert json.loads((prepared / "prepared.json").read_text())["rows"] == {"train": 8, "eval": 2}


def test_the_accelerate_config_is_a_named_option_and_overrides_follow_the_recipe():
    nemo = "recipes/mistral-nemo-12b/sft_full.yaml"
    zero3 = "accelerate_configs/deepspeed_zero3_sp8.yaml"
    for args, env in (
        (["--accelerate-config", zero3, nemo], {}),
        ([f"--accelerate-config={zero3}", nemo], {}),
        ([nemo], {"ACCELERATE_CONFIG": zero3}),
    ):
        p, cmd = launch(*args, "--learning_rate", "2e-6", "--run_name", "a b", **env)
        assert p.returncode == 0, p.stderr
        assert cmd[cmd.index("--config_file") + 1] == zero3
        assert cmd[cmd.index("--config") + 1] == nemo
        assert cmd[-4:] == ["--learning_rate", "2e-6", "--run_name", "a b"]
    # the recipe's overrides alone: the default config, never an override read as the config
    p, cmd = launch("recipes/film-7b/sft_full.yaml", "--learning_rate", "2e-6")
    assert cmd[cmd.index("--config_file") + 1] == "accelerate_configs/fsdp.yaml"
    assert cmd[-2:] == ["--learning_rate", "2e-6"]


def test_the_launcher_names_a_positional_config_and_a_missing_file():
    p, _ = launch("recipes/film-7b/sft_full.yaml", "accelerate_configs/fsdp.yaml")
    assert p.returncode == 2 and "unexpected argument accelerate_configs/fsdp.yaml" in p.stderr
    assert "--accelerate-config FILE" in p.stderr
    p, _ = launch("--accelerate-config", "accelerate_configs/nope.yaml", "recipes/film-7b/sft_full.yaml")
    assert p.returncode == 2 and "accelerate_configs/nope.yaml does not exist" in p.stderr
    p, _ = launch()
    assert p.returncode != 0 and "usage: launch.slurm [--accelerate-config FILE] RECIPE" in p.stderr


@pytest.mark.parametrize("num_shards", [2, 4, 3, 12])
def test_each_file_of_a_streamed_corpus_is_read_by_one_shard(tmp_path, num_shards, capsys):
    """8 files over 2, 4 or 3 shards: each shard streams whole files of its own (3 shards: 3, 3 and 2 files),
    every row once; over 12 shards (more shards than files) each keeps 1 row in 12 of every file."""
    from datasets import load_dataset

    files = []
    for f in range(8):
        files.append(str(tmp_path / f"part-{f}.jsonl"))
        Path(files[-1]).write_text("".join(json.dumps({"text": f"{f}/{i}"}) + "\n" for i in range(5)))
    ds = load_dataset("json", data_files=files, split="train", streaming=True)
    assert ds.num_shards == 8
    seen = []
    for shard in range(num_shards):
        rows = [r["text"] for r in split_for_shard(ds, shard, num_shards, "corpus")]
        seen += rows
        read = {r.split("/")[0] for r in rows}
        if num_shards <= 8:  # whole files: 5 rows of each file it reads
            assert len(rows) == 5 * len(read)
    assert sorted(seen) == sorted(f"{f}/{i}" for f in range(8) for i in range(5))
    err = capsys.readouterr().err
    if num_shards == 3:
        assert "shard 2 of 3 streams 2 of corpus's 8 files" in err
    if num_shards == 12:
        assert "each shard streams all of them and keeps 1 row in 12" in err
    assert streamed_per_kept(8, num_shards) == (1 if num_shards <= 8 else num_shards)


@pytest.mark.parametrize("num_shards", [3, 12])
def test_each_local_file_is_read_by_one_shard(tmp_path, num_shards, capsys):
    """Local files follow the streamed rule: 8 files over 3 shards are read whole by one shard each (a
    shard that read every file would open all 8); over 12 shards each reads all and keeps 1 row in 12."""
    from in2.synth.corpus import iter_records

    for f in range(8):
        (tmp_path / f"part-{f}.jsonl").write_text("".join(json.dumps({"text": f"{f}/{i}"}) + "\n" for i in range(5)))
    seen = []
    for shard in range(num_shards):
        rows = [
            r["text"] for r in iter_records(str(tmp_path), fields=("text",), shard_index=shard, num_shards=num_shards)
        ]
        seen += rows
        if num_shards == 3:  # files shard, shard + 3, ...: whole, 5 rows each
            assert sorted({r.split("/")[0] for r in rows}) == [str(f) for f in range(shard, 8, 3)]
            assert len(rows) == 5 * len(range(shard, 8, 3))
    assert sorted(seen) == sorted(f"{f}/{i}" for f in range(8) for i in range(5))
    err = capsys.readouterr().err
    assert ("shard 2 of 3 reads 2 of" in err) if num_shards == 3 else ("keeps 1 row in 12" in err)


def test_c4_realnewslike_files_are_each_read_once_at_the_default_shard_count():
    assert streamed_per_kept(512, 128) == 1 and 512 % 128 == 0
    assert streamed_per_kept(512, 100) == 1  # 5 or 6 files per shard, still each read once
    assert streamed_per_kept(512, 1024) == 1024
