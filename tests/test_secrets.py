"""No secret in any output: synth, publish (dry run), train and eval run with fake key and token values
in the environment, then every file written and everything printed is searched for them."""

from pathlib import Path

import yaml

from in2.cli import main
from tests.conftest import write_recipe
from tests.test_synth import write_config

API_KEY = "sk-in2-secret-api-key-0b1c2d3e"
HF_TOKEN = "hf_in2SecretTokenValue9f8e7d6c"


def _leaks(root: Path, text: str) -> list[str]:
    found = []
    for value in (API_KEY, HF_TOKEN):
        if value in text:
            found.append(f"printed output contains {value[:8]}...")
        for path in root.rglob("*"):
            if path.is_file() and value.encode() in path.read_bytes():
                found.append(f"{path.relative_to(root)} contains {value[:8]}...")
    return found


def test_no_key_or_token_reaches_files_or_logs(tmp_path, monkeypatch, capsys, server, tiny_model, dataset_folder):
    monkeypatch.setenv("IN2_TEST_API_KEY", API_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)

    # synthesis over real HTTP with the key in the environment
    assert main(["synth", "--config", str(write_config(tmp_path, server.url))]) == 0
    dataset = tmp_path / "run"
    # publishing, as a dry run (the token is read, never printed)
    assert main(["publish", str(dataset), "--repo-id", "org/in2-test", "--version", "v0.1.0", "--dry-run"]) == 0
    # training: recipe, card, checkpoint and arguments files
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, max_steps=1, save_steps=1)
    assert main(["train", "--config", str(recipe)]) == 0
    # evaluation against the OpenAI-compatible server, refreshing the trained model's card
    checkpoint = tmp_path / "out"
    eval_recipe = tmp_path / "eval.yaml"
    eval_recipe.write_text(
        yaml.safe_dump(
            {
                "tokenizer": {
                    "name_or_path": "pkg://mistral_common/data/tokenizer.model.v1",
                    "gguf_file": None,
                    "chat_template": "mistral-instruct",
                },
                "probes": {
                    "tasks": ["database"],
                    "lengths": [512],
                    "sets": 1,
                    "span_size": 5,
                    "output_dir": str(tmp_path / "probes"),
                },
                "models": [
                    {
                        "name": "server",
                        "generator": {
                            "backend": "openai",
                            "model": "m",
                            "base_url": server.url,
                            "api_key_env": "IN2_TEST_API_KEY",
                            "temperature": 0.0,
                            "max_tokens": 64,
                            "cache_dir": str(tmp_path / "eval-cache"),
                        },
                    }
                ],
                "output_dir": str(tmp_path / "results"),
                "model_card": str(checkpoint),
            }
        )
    )
    assert main(["eval", "--config", str(eval_recipe)]) == 0

    out = capsys.readouterr()
    assert (checkpoint / "eval_results.json").is_file() and (checkpoint / "checkpoint-1").is_dir()
    assert _leaks(tmp_path, out.out + out.err) == []
    # the key was in use (so the search above is not vacuous)
    assert server.auth and set(server.auth) == {f"Bearer {API_KEY}"}


def test_the_search_finds_a_planted_secret(tmp_path):
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "log.bin").write_bytes(b"\x00token=" + HF_TOKEN.encode() + b"\xff")
    assert _leaks(tmp_path, "") == ["deep/er/log.bin contains hf_in2Se..."]
    assert _leaks(tmp_path / "deep" / "er" / "none", f"key {API_KEY}") == ["printed output contains sk-in2-s..."]
