"""Experiment tracking (issue 22, item 6): `report_to: trackio` logs a training run's metrics to trackio's local
database with no network, through TRL's own callback, and they read back."""

import json
import os
import subprocess
import sys

from tests.conftest import write_recipe


def test_a_training_run_logs_its_metrics_to_trackio_offline(tmp_path, tiny_model, dataset_folder):
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, max_steps=3, save_strategy="no")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1", "HF_TOKEN": ""}
    in2 = os.path.join(os.path.dirname(sys.executable), "in2")
    args = ["--report_to", "trackio", "--project", "in2-test", "--run_name", "tiny-1"]
    run = subprocess.run([in2, "train", "--config", str(recipe), *args], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    read = (
        "import json; from trackio.sqlite_storage import SQLiteStorage as S; "
        "print(json.dumps([S.get_projects(), S.get_runs('in2-test'), S.get_logs('in2-test', 'tiny-1')], default=str))"
    )
    out = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True, text=True, check=True).stdout
    projects, runs, logs = json.loads(out.strip().splitlines()[-1])
    assert projects == ["in2-test"] and runs == ["tiny-1"]
    losses = [row["train/loss"] for row in logs if "train/loss" in row]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)  # logging_steps 1, three optimizer steps
