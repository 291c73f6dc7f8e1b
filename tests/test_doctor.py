"""`in2 doctor --config RECIPE` (issue 22, item 3): one table, exit 1 on a blocker; each row checked offline against
a real local server, real folders and the installed packages."""

import functools
import http.server
import json
import sys
import threading
from pathlib import Path

import pytest
import yaml

from in2 import budget, cli, doctor, measured
from in2.llm.config import GeneratorConfig
from tests.openai_server import canned_generator

ROOT = Path(__file__).resolve().parents[1]


def rows(recipe, capsys, code: int, *extra: str) -> dict[str, tuple[str, str]]:
    """Run the command; {check: (status, detail)} from its table."""
    assert cli.main(["doctor", "--config", str(recipe), *extra]) == code
    out = capsys.readouterr().out
    table = [line.split(" | ") for line in out.splitlines() if line.startswith("| ") and not line.startswith("| check")]
    return {r[0][2:]: (r[1], r[2].rstrip(" |")) for r in table}


def test_a_cpu_training_recipe_with_everything_in_place_passes(tmp_path, capsys, tiny_model, dataset_folder):
    recipe = yaml.safe_load((ROOT / "recipes/demo/sft.yaml").read_text())
    recipe |= {"model_name_or_path": str(tiny_model), "gguf_file": None, "dataset_name": str(dataset_folder)}
    recipe |= {"output_dir": str(tmp_path / "out" / "ckpt")}
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(recipe))
    got = rows(path, capsys, 0)
    assert got["CUDA"][0] == "skip" and "runs on CPU" in got["CUDA"][1]
    assert got["tokenizer"][0] == "ok" and "32,000 tokens" in got["tokenizer"][1]
    assert got["dataset"] == ("ok", f"{dataset_folder} (local)")
    assert got["HF token"][0] == "skip" and got["output folder"][0] == "ok"
    assert not (tmp_path / "out").exists()  # the check leaves nothing behind
    assert {got[p][0] for p in ("torch", "transformers", "trl", "peft", "accelerate")} == {"ok"}


def test_the_film_7b_one_gpu_recipe_on_this_cpu_machine_has_blockers(tmp_path, capsys):
    got = rows(ROOT / "recipes/film-7b/sft_full_1gpu.yaml", capsys, 1)
    assert got["CUDA"][0] == "BLOCKER"
    assert got["torch-optimi"] == ("ok", "0.3.3 (kahan_summation: true)")
    assert got["flash-attn"][0] in ("warn", "ok") and got["bitsandbytes"][0] in ("skip", "ok")
    assert got["tokenizer"][0] == "BLOCKER" and "Mistral-7B-Instruct-v0.2" in got["tokenizer"][1]  # offline
    assert got["dataset"][0] == "BLOCKER" and "data/in2-film-7b: no such local folder" in got["dataset"][1]
    assert "2 checkpoints of 57.9 GB" in got["disk"][1]


def test_gpu_memory_against_the_recipes_measured_need():
    ok = doctor.memory_row("film-7b/sft_full_1gpu.yaml", [79.6, 79.6])
    need = measured.GPU_MEMORY_GIB["film-7b/sft_full_1gpu.yaml"].value
    assert ok.status == "ok" and f"needs {need:.1f} GiB" in ok.detail and "measured" not in ok.detail.split("(")[0]
    short = doctor.memory_row("film-7b/sft_full_1gpu.yaml", [79.6, 44.5])  # the smallest GPU decides
    assert short.status == "BLOCKER" and "44.5 GiB per GPU" in short.detail and "H200" in short.detail
    assert "estimate:" in doctor.memory_row("film-7b/sft_qlora.yaml", [40.0]).detail
    assert doctor.memory_row("mistral-nemo-12b/sft_full.yaml", [80.0]).status == "warn"  # a GPU recipe, no figure
    assert doctor.memory_row("mine/sft.yaml", [80.0]).status == "skip"
    assert all(f is None or f.value > 0 for f in measured.GPU_MEMORY_GIB.values())


def test_packages_kernels_and_the_launcher(tmp_path):
    assert doctor.package("torch", "x").status == "ok"
    missing = doctor.package("no-such-dist-in2", "kahan_summation: true")
    assert missing.status == "BLOCKER" and 'pip install -e ".[film]"' in missing.detail
    assert doctor.package("no-such-dist-in2", None).status == "skip"
    assert doctor.package("no-such-dist-in2", "use_liger_kernel", doctor.WARN).status == "warn"
    (ds,) = doctor.accelerate_rows(str(ROOT / "accelerate_configs/deepspeed_zero3.yaml"))
    assert ds.status == "ok" and "launches DeepSpeed" in ds.detail  # installed by make install
    (fsdp,) = doctor.accelerate_rows(str(ROOT / "accelerate_configs/fsdp.yaml"))
    assert "launches DeepSpeed" not in fsdp.detail


def test_the_generator_endpoint_answers_and_lists_the_model(server):
    ok = doctor.endpoint_row("generator", GeneratorConfig(**canned_generator(server.url)))
    assert ok.status == "ok" and "lists 'canned'" in ok.detail and server.paths == ["/v1/models"]
    other = doctor.endpoint_row("generator", GeneratorConfig(**canned_generator(server.url, model="gpt-4-turbo")))
    assert other.status == "BLOCKER" and "does not list 'gpt-4-turbo' (canned)" in other.detail
    down = doctor.endpoint_row("generator", GeneratorConfig(**canned_generator("http://127.0.0.1:9/v1")))
    assert down.status == "BLOCKER" and "does not answer /models" in down.detail
    local = doctor.endpoint_row("generator", GeneratorConfig())
    assert local.status == "skip"


def test_a_synth_recipe_checks_tokenizer_corpus_endpoint_and_disk(tmp_path, capsys, server, stdlib_corpus):
    recipe = yaml.safe_load((ROOT / "recipes/film-7b/in2_data.yaml").read_text())
    recipe["corpus"]["source"] = str(stdlib_corpus)
    recipe["general"]["source"] = "builtin:instructions"
    recipe["generator"] = canned_generator(server.url)
    recipe["output_dir"] = str(tmp_path / "data" / "in2")
    recipe["mixture"] |= {"fine_grained": 1100, "integration": 300, "short": 150, "general": 200}
    path = tmp_path / "in2_data.yaml"
    path.write_text(yaml.safe_dump(recipe))
    got = rows(path, capsys, 0)
    assert got["mistral-common"][0] == "ok" and got["tokenizer"][0] == "ok"
    assert got["corpus"] == ("ok", f"{stdlib_corpus} (local)") and got["generator"][0] == "ok"
    assert got["disk"][0] == "ok" and "the run writes ~0 GB (1,750 rows; release parquet" in got["disk"][1]
    recipe["corpus"]["source"] = "allenai/c4"  # the Hub, unreachable here
    path.write_text(yaml.safe_dump(recipe))
    got = rows(path, capsys, 1)
    assert got["corpus"][0] == "BLOCKER" and "allenai/c4" in got["corpus"][1]


def test_an_eval_recipe_checks_lm_eval_and_every_model(tmp_path, capsys, server):
    recipe = yaml.safe_load((ROOT / "recipes/film-7b/eval.yaml").read_text())
    recipe["models"][0]["generator"] = canned_generator(server.url)  # a server of one's own
    del recipe["models"][0]["serve"]
    recipe["models"][1]["serve"] = {**recipe["models"][1]["serve"], "command": [sys.executable, "-m", "in2.cli"]}
    recipe["output_dir"] = str(tmp_path / "results")
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(recipe))
    got = rows(path, capsys, 1)  # vllm is not installed here: the third model cannot be started
    assert got["lm-eval"][0] == "ok"
    assert got["model film-7b-in2"][0] == "ok" and got["model Mistral-7B-Instruct-v0.2"][0] == "ok"
    assert got["model FILM-7B"][0] == "BLOCKER" and "`vllm`, which is not on PATH" in got["model FILM-7B"][1]


def test_disk_and_output_folder(tmp_path):
    assert doctor.disk_row(str(tmp_path / "a" / "b"), 1e3, "tiny").status == "ok"
    full = doctor.disk_row(str(tmp_path), 1e18, "a lot")
    assert full.status == "BLOCKER" and "the run writes ~1,000,000,000 GB (a lot)" in full.detail
    assert doctor.disk_row(str(tmp_path), None, "").status == "skip"
    (tmp_path / "file").write_text("")
    bad = doctor.output_row(str(tmp_path / "file" / "out"))  # under a file: nothing can be written
    assert bad.status == "BLOCKER" and "cannot write" in bad.detail
    assert budget.train_disk_bytes("film-7b/sft_full.yaml", 2).value == pytest.approx(7.24e9 * (12 * 2 + 4))


@pytest.fixture
def hub(monkeypatch):
    """A local HTTP server answering the Hub's /api/whoami-v2 with `role` (set per test)."""
    from huggingface_hub import constants

    state = {"role": "write", "paths": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            state["paths"].append(self.path)
            body = {"name": "lab", "auth": {"accessToken": {"role": state["role"]}}}
            if self.path.startswith("/api/datasets/org/in2-film-7b/revision/v1.0.0"):
                body = {"id": "org/in2-film-7b", "sha": "0123456789abcdef0123456789abcdef01234567"}
            elif self.path.startswith("/api/datasets/"):
                self.send_response(404)
                self.end_headers()
                return
            elif self.headers.get("Authorization") != "Bearer hf_test":
                self.send_response(401)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    yield state
    httpd.shutdown()


def test_a_hub_token_that_can_write_where_the_recipe_pushes(hub, monkeypatch):
    assert doctor.hub_token_row(False, None).status == "skip"
    ok = doctor.hub_token_row(True, "org/film-7b-in2")
    assert ok.status == "ok" and "user lab, write token for org/film-7b-in2" in ok.detail
    hub["role"] = "read"
    read = doctor.hub_token_row(True, "org/film-7b-in2")
    assert read.status == "BLOCKER" and "cannot write for org/film-7b-in2" in read.detail
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    assert doctor.hub_token_row(True, None).status == "BLOCKER"


def test_a_hub_dataset_resolves_at_its_revision(hub):
    ok = doctor.dataset_row("dataset", "org/in2-film-7b", "v1.0.0")
    assert ok.status == "ok" and ok.detail == "org/in2-film-7b@v1.0.0 -> commit 0123456789"
    assert hub["paths"][-1].startswith("/api/datasets/org/in2-film-7b/revision/v1.0.0")
    missing = doctor.dataset_row("dataset", "org/in2-film-7b", "v9.9.9")
    assert missing.status == "BLOCKER" and "@v9.9.9 not on the Hub" in missing.detail
