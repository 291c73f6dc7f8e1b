"""No secret in any output: synth, publish (dry run), train and eval (probing and short tasks) run with
fake key and token values in the environment and a password in the server URL, then every file written
and everything printed or logged is searched for them. The sanitizer's rules have their own test."""

import base64
import json
import logging
import subprocess
import sys
from pathlib import Path

import yaml

from in2 import redact
from in2.cli import main
from tests.conftest import write_recipe
from tests.test_synth import write_config

API_KEY = "sk-in2-secret-api-key-0b1c2d3e"
HF_TOKEN = "hf_in2SecretTokenValue9f8e7d6c"
PASSWORD = "pw-in2-S3cretPassw0rd"
LOGIN = f"in2user:{PASSWORD}"
BASIC = base64.b64encode(LOGIN.encode()).decode()  # what an Authorization header would carry
SECRETS = (API_KEY, HF_TOKEN, PASSWORD, BASIC)


def _leaks(root: Path, text: str, inputs: tuple[Path, ...] = ()) -> list[str]:
    """Where a secret occurs in `text` or in a file under `root` other than the `inputs` (the recipes)."""
    found = []
    for value in SECRETS:
        if value in text:
            found.append(f"printed output contains {value[:8]}...")
        for path in root.rglob("*"):
            if path.is_file() and path not in inputs and value.encode() in path.read_bytes():
                found.append(f"{path.relative_to(root)} contains {value[:8]}...")
    return found


def _short_task(folder: Path) -> Path:
    """A generate_until lm-eval task on a local file (the test server answers "ok")."""
    folder.mkdir()
    (folder / "ok.jsonl").write_text("".join(json.dumps({"q": f"Say ok ({i})", "a": "ok"}) + "\n" for i in range(2)))
    (folder / "in2_say_ok.yaml").write_text(
        f"task: in2_say_ok\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / 'ok.jsonl'}\n"
        'test_split: test\noutput_type: generate_until\ndoc_to_text: "{{q}}"\ndoc_to_target: "{{a}}"\n'
        'generation_kwargs:\n  until: ["\\n"]\n  max_gen_toks: 8\nmetric_list:\n  - metric: exact_match\n'
    )
    return folder


def test_no_secret_reaches_files_or_logs(tmp_path, monkeypatch, capfd, caplog, server, tiny_model, dataset_folder):
    monkeypatch.setenv("IN2_TEST_API_KEY", API_KEY)
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    caplog.set_level(logging.INFO)  # what a more talkative logging setup would print is searched too
    login_url = server.url.replace("http://", f"http://{LOGIN}@")

    # synthesis over real HTTP, the generator behind a URL with a login
    synth_recipe = write_config(tmp_path, login_url)
    assert main(["synth", "--config", str(synth_recipe)]) == 0
    dataset = tmp_path / "run"
    # publishing, as a dry run (the token is read, never printed)
    assert main(["publish", str(dataset), "--repo-id", "org/in2-test", "--version", "v0.1.0", "--dry-run"]) == 0
    # training: the recipe sets an environment variable to a URL with a login (its env section); recipe,
    # card, checkpoint and arguments files are written
    monkeypatch.setenv("IN2_TEST_UPSTREAM", "")  # the recipe sets it; the test's end restores it
    recipe = write_recipe(tmp_path, tiny_model, dataset_folder, max_steps=1, save_steps=1)
    recipe.write_text(recipe.read_text() + yaml.safe_dump({"env": {"IN2_TEST_UPSTREAM": login_url}}))
    assert main(["train", "--config", str(recipe)]) == 0
    # evaluation (probing, and short tasks through lm-eval) of a model behind the login URL and one
    # reached with the key, refreshing the trained model's card
    checkpoint = tmp_path / "out"

    def model(name, url):
        generator = {"backend": "openai", "model": str(tiny_model), "base_url": url, "api_key_env": "IN2_TEST_API_KEY"}
        generator.update(temperature=0.0, max_tokens=64, cache_dir=str(tmp_path / "eval-cache"))
        return {"name": name, "generator": generator}

    eval_recipe = tmp_path / "eval.yaml"
    eval_recipe.write_text(
        yaml.safe_dump(
            {
                "tokenizer": {
                    "name_or_path": "pkg://mistral_common/data/tokenizer.model.v1",
                    "gguf_file": None,
                    "chat_template": "mistral-instruct",
                },
                "suites": ["probing", "short"],
                "probes": {
                    "tasks": ["database"],
                    "lengths": [512],
                    "sets": 1,
                    "span_size": 5,
                    "output_dir": str(tmp_path / "probes"),
                },
                "short": {
                    "tasks": [{"name": "in2_say_ok", "metric": "exact_match,none"}],
                    "include_path": str(_short_task(tmp_path / "tasks")),
                    "batch_size": 1,
                },
                "models": [model("login", login_url), model("keyed", server.url)],
                "output_dir": str(tmp_path / "results"),
                "model_card": str(checkpoint),
            }
        )
    )
    assert main(["eval", "--config", str(eval_recipe)]) == 0

    out = capfd.readouterr()
    assert (checkpoint / "eval_results.json").is_file() and (checkpoint / "checkpoint-1").is_dir()
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["short"]["scores"] == {"login": {"in2_say_ok": 100.0}, "keyed": {"in2_say_ok": 100.0}}
    assert _leaks(tmp_path, out.out + out.err + caplog.text, inputs=(synth_recipe, recipe, eval_recipe)) == []
    # the secrets were in use (so the search above is not vacuous): the login by synth, probing and
    # lm-eval, the key by the other model; the URLs were written, without their login
    assert set(server.auth) == {f"Basic {BASIC}", f"Bearer {API_KEY}"}
    assert {"/v1/chat/completions", "/v1/completions"} <= set(server.paths)
    host = server.url.removeprefix("http://")
    assert f"http://{host}" in (dataset / "synth_config.yaml").read_text()
    assert f"IN2_TEST_UPSTREAM: http://{host}" in (checkpoint / "README.md").read_text()
    assert results["config"]["models"][0]["generator"]["base_url"] == server.url


def test_the_search_finds_a_planted_secret(tmp_path):
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "log.bin").write_bytes(b"\x00token=" + HF_TOKEN.encode() + b"\xff")
    assert _leaks(tmp_path, "") == ["deep/er/log.bin contains hf_in2Se..."]
    assert _leaks(tmp_path / "deep" / "er" / "none", f"key {API_KEY}") == ["printed output contains sk-in2-s..."]


def test_the_sanitizer_rules():
    # URLs: the login goes, credential-named query values are blanked, everything else stays
    assert redact.url(f"https://{LOGIN}@host:8443/v1") == "https://host:8443/v1"
    assert (
        redact.url("https://h/v1?api-version=2024-06&sig=abc&X-Amz-Signature=def&token=t")
        == "https://h/v1?api-version=2024-06&sig=<redacted>&X-Amz-Signature=<redacted>&token=<redacted>"
    )
    assert redact.url("http://127.0.0.1:9/v1") == "http://127.0.0.1:9/v1" and redact.url(None) is None
    assert redact.userinfo(f"http://{LOGIN}@h/v1") == ("http://h/v1", LOGIN)
    # free text: URLs inside it, key-looking values, credential pairs (YAML lines, key=value, reprs)
    text = (
        f"hub_token: hf_abc\n  wandb_api_key: k123\nlearning_rate: 1e-6\n- my_secret: s\npassword: two words\n"
        f"max_tokens: 512\npad_token: </s>\napi_key_env: OPENAI_API_KEY\nurl: http://{LOGIN}@h/v1\n"
        f"calling with {API_KEY} and {HF_TOKEN}; Authorization: Bearer abcdefgh12345678\n"
        f"api_key=xyz,model=m {{'accessToken': 'tok', 'header': {{'Authorization': 'Basic {BASIC}'}}}}\n"
    )
    red = redact.text(text)
    for gone in ("hf_abc", "k123", " s\n", "two words", PASSWORD, API_KEY, HF_TOKEN, "abcdefgh", "xyz", "'tok'", BASIC):
        assert gone not in red, gone
    for kept in ("learning_rate: 1e-6", "max_tokens: 512", "pad_token: </s>", "api_key_env: OPENAI_API_KEY"):
        assert kept in red, kept
    assert "url: http://h/v1" in red and "model=m" in red
    # nested configs: credential-named string fields, and every string
    cfg = {"generator": {"base_url": f"http://{LOGIN}@h", "api_key_env": "K", "max_tokens": 5}, "hub_token": "x"}
    assert redact.data(cfg) == {
        "generator": {"base_url": "http://h", "api_key_env": "K", "max_tokens": 5},
        "hub_token": "<redacted>",
    }


def test_log_records_are_sanitized_whoever_logs_them(caplog):
    redact.scrub_logs()
    redact.scrub_logs()  # idempotent
    caplog.set_level(logging.INFO)
    logging.getLogger("some.library").info("POST %s with key %s", f"http://{LOGIN}@h/v1", API_KEY)
    assert caplog.records[-1].getMessage() == "POST http://h/v1 with key <redacted>"


def test_uncaught_tracebacks_and_warnings_are_sanitized():
    """A library's warning or a crash's traceback may quote a URL or a key: stderr gets them redacted."""
    code = (
        "import warnings\nfrom in2 import redact\nredact.scrub_logs()\n"
        f"warnings.warn('retrying http://{LOGIN}@h/v1')\n"
        f"raise RuntimeError('request failed with key {API_KEY}')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "retrying http://h/v1" in run.stderr and "RuntimeError: request failed with key <redacted>" in run.stderr
    assert LOGIN not in run.stderr and API_KEY not in run.stderr
