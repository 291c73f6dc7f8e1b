"""The command line (issue 14, items 3 and 7): one override syntax, help from the recipe's dataclass metadata,
`in2 train` as a TrlParser subcommand, one-line errors with close matches. Nothing here loads a model: help and
errors happen before any heavy work, and the one run per command stops at the call the CLI makes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from in2 import cli
from in2.evaluation.config import EvalConfig
from in2.recipes import recipe_fields
from in2.synth.config import SynthConfig

ROOT = Path(__file__).resolve().parents[1]
SYNTH = str(ROOT / "recipes/demo/in2_data.yaml")
EVAL = str(ROOT / "recipes/demo/eval.yaml")
TRAIN = str(ROOT / "recipes/demo/sft.yaml")
IN2 = Path(sys.executable).with_name("in2")  # the console script of the environment running the tests


@pytest.fixture
def synth_config(monkeypatch):
    """The SynthConfig `in2 synth --dry-run ...` builds; the dry run itself is not run."""
    from in2.synth import pipeline

    seen = []

    def dry_run(cfg, sample, pilot=None):
        seen.append(cfg)
        return {k: 0 for k in ("requests", "expected_waves", "prompt_tokens", "completion_tokens_at_most")} | {
            "estimated_cost_usd_at_most": 0.0,
            "estimated_cost_usd_realistic": 0.0,
            "reply_tokens": {"value": 150, "source": "estimate: x"},
            "hours_under_rate_limits": None,
            "batch": {"estimated_cost_usd_realistic": 0.0, "batches": 0, "waves": 0},
        }

    monkeypatch.setattr(pipeline, "dry_run", dry_run)

    def run(*args: str) -> SynthConfig:
        assert cli.main(["synth", "--config", SYNTH, "--dry-run", *args]) == 0
        return seen.pop()

    return run


def test_every_spelling_of_an_override_sets_the_field(synth_config):
    default = synth_config()
    assert default.mixture.short != 100 and default.generator.model != "gpt-4o"
    spellings = [
        ["--generator.model", "gpt-4o", "--mixture.short", "100"],
        ["--generator.model=gpt-4o", "--mixture.short=100"],
        ["generator.model=gpt-4o", "mixture.short=100"],  # the old form, kept as an alias
    ]
    for args in spellings:
        cfg = synth_config(*args)
        assert (cfg.generator.model, cfg.mixture.short) == ("gpt-4o", 100)
    cfg = synth_config("--corpus.max_texts", "null", "--decontam.sources", "[{source: a.jsonl, fields: [q]}]")
    assert cfg.corpus.max_texts is None and cfg.decontam.sources[0].fields == ["q"]


def test_flags_older_than_the_rule_are_aliases_of_their_fields(synth_config, tmp_path):
    cfg = synth_config(
        "--output-dir", str(tmp_path), "--num-shards", "4", "--shard-index", "3", "--max-requests", "7",
        "--max-cost-usd", "1.5", "--generator.price_input_per_1m", "1",
    )  # fmt: skip
    assert (cfg.output_dir, cfg.num_shards, cfg.shard_index) == (str(tmp_path), 4, 3)
    assert (cfg.generator.max_requests, cfg.generator.max_cost_usd) == (7, 1.5)
    assert synth_config("--output_dir", str(tmp_path / "x")).output_dir == str(tmp_path / "x")


def test_eval_fields_are_options_too(monkeypatch, tmp_path):
    from in2.evaluation.probing import build

    seen = []
    monkeypatch.setattr(build, "build_all", lambda cfg: (seen.append(cfg), (tmp_path, ["x"]))[1])
    assert cli.main(["probe", "build", "--config", EVAL, "--probes.lengths", "[4096]", "probes.sets=2"]) == 0
    assert seen[0].probes.lengths == [4096] and seen[0].probes.sets == 2


def _fails(argv: list[str], capsys) -> str:
    """Run `in2 ARGV`, expect exit status 2, return stderr."""
    with pytest.raises(SystemExit) as e:
        code = cli.main(argv)
        raise SystemExit(code)
    assert e.value.code == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return out.err


@pytest.mark.parametrize(
    "typo",
    [["--context.max_contxt_tokens", "5"], ["--context.max_contxt_tokens=5"], ["context.max_contxt_tokens=5"]],
)
def test_a_misspelt_field_is_blamed_on_the_command_line_with_a_close_match(typo, capsys):
    err = _fails(["synth", "--config", SYNTH, "--dry-run", *typo], capsys)
    assert "context.max_contxt_tokens" in err and "did you mean" in err and "context.max_context_tokens" in err
    assert SYNTH not in err and "in2_data.yaml" not in err  # the recipe file is not to blame
    if typo[0].startswith("--"):  # an unknown option: the command's usage line, then the error
        assert err.splitlines()[0].startswith("usage: in2 synth ") and len(err.splitlines()) == 2
    else:
        assert err.startswith("in2: error: command line: unknown field") and len(err.splitlines()) == 1


def test_a_bad_value_on_the_command_line_names_the_field(capsys):
    err = _fails(["synth", "--config", SYNTH, "--dry-run", "--mixture.short", "abc"], capsys)
    assert err == "in2: error: command line: mixture.short must be int, got 'abc'\n"
    err = _fails(["eval", "--config", EVAL, "--probes.lengths", "[4096"], capsys)
    assert err.startswith("in2: error: command line: probes.lengths:") and len(err.splitlines()) == 1
    # a value that breaks a rule with the recipe's values: both are named
    err = _fails(["synth", "--config", SYNTH, "--dry-run", "--context.min_context_tokens", "99999"], capsys)
    assert err.startswith(f"in2: error: {SYNTH} + command line: context.min_context_tokens (99999) must be <=")


def test_a_misspelt_recipe_key_is_still_blamed_on_the_recipe(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("contxt: {}\n")
    err = _fails(["synth", "--config", str(recipe), "--dry-run"], capsys)
    assert err.startswith(f"in2: error: {recipe}: unknown field contxt (did you mean context?)")


def test_unknown_options_show_the_commands_usage_line(capsys):
    for argv, usage in (
        (["synth", "--zzz"], "usage: in2 synth "),
        (["eval", "--config", EVAL, "--zzz"], "usage: in2 eval "),
        (["probe", "build", "--config", EVAL, "--zzz"], "usage: in2 probe build "),
        (["publish", "x", "--repo-id", "a/b", "--version", "v1.0.0", "--zzz"], "usage: in2 publish "),
    ):
        err = _fails(argv, capsys)
        assert err.startswith(usage) and err.rstrip().endswith("error: unknown option --zzz"), err
        assert "COMMAND" not in err  # not the top-level usage
    assert _fails(["trian"], capsys) == "in2: error: COMMAND: invalid choice trian (did you mean train?)\n"


def test_help_lists_every_recipe_field_with_type_default_and_help(capsys):
    for argv, cls in ((["synth"], SynthConfig), (["eval"], EvalConfig), (["probe", "build"], EvalConfig)):
        with pytest.raises(SystemExit) as e:
            cli.main([*argv, "--help"])
        assert e.value.code == 0
        out = " ".join(capsys.readouterr().out.split())  # unwrapped
        assert f"usage: in2 {' '.join(argv)} " in out and "--config RECIPE" in out
        for path, field, _, _ in recipe_fields(cls):
            assert field.metadata["help"], f"{cls.__name__}.{path} has no help"
            assert f"recipe fields: {path.rpartition('.')[0] or 'top level'}" in out
            assert f"--{path} " in out and "".join(field.metadata["help"].split()) in "".join(out.split())
    assert "--corpus.max_texts int|None Stop after this many texts" in " ".join(_help(["synth"], capsys).split())
    assert "(default: 32000)" in _help(["synth"], capsys)  # context.max_context_tokens


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    return capsys.readouterr().out


def test_every_probe_argument_has_a_description():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    probe = commands["probe"]._subparsers._group_actions[0].choices
    for name in ("build", "score"):
        for action in probe[name]._actions:
            assert action.help, f"in2 probe {name} {action.option_strings or action.dest} has no help"
    span = next(a for a in probe["score"]._actions if "--span-size" in a.option_strings)
    assert "manifest.json" in span.help


def test_train_help_is_short_and_true(capsys):
    out = _help(["train"], capsys)
    lines = out.splitlines()
    assert lines[0] == "usage: in2 train --config RECIPE [--field VALUE ...]"
    assert len(lines) < 150, len(lines)
    assert "--config" in out and "--help-all" in out
    text = " ".join(out.split())
    assert "--kahan_summation bool (default: false): Train bf16 weights" in text  # in2's field, with its help
    assert "learning_rate" in text and "model_name_or_path" in text  # TRL's, by name
    with pytest.raises(SystemExit):
        cli.main(["train", "--help-all"])
    every = " ".join(capsys.readouterr().out.split())
    assert "--learning_rate float (default: 2.0e-05): The initial learning rate for AdamW." in every
    assert "--lora_r int (default: 16)" in every


def test_train_errors_are_one_line_naming_the_flag(capsys):
    err = _fails(["train", "--config", TRAIN, "--learning_rate", "abc"], capsys)
    assert err == "in2 train: error: --learning_rate: invalid float value 'abc'\n"
    err = _fails(["train", "--config", TRAIN, "--learnig_rate", "1e-5"], capsys)
    assert err.splitlines() == [
        "usage: in2 train --config RECIPE [--field VALUE ...]",
        "in2 train: error: unknown option --learnig_rate (did you mean --learning_rate?)",
    ]


def test_python_m_in2_train_sft_parses_and_errs_the_same(capsys):
    from in2.train import sft

    script_args, training_args, _, recipe = sft.parse(["--config=" + TRAIN, "--learning_rate", "3e-5"])
    assert training_args.learning_rate == 3e-5 and "command-line overrides: --learning_rate 3e-5" in recipe
    with pytest.raises(SystemExit) as e:
        sft.parse(["--config", TRAIN, "--max_stpes", "2"])
    assert e.value.code == 2
    assert "error: unknown option --max_stpes (did you mean --max_steps?)" in capsys.readouterr().err


def _run(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run([*argv], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def test_the_console_script_helps_without_heavy_imports():
    """The real `in2` script: --version; `in2 synth --help` imports no torch; `in2 train --help` imports
    TRL's argument classes (torch comes with them) but no trainer and no model code."""
    assert _run(str(IN2), "--version").stdout.startswith("in2 ")
    run = _run(sys.executable, "-X", "importtime", str(IN2), "synth", "--help")
    assert run.returncode == 0 and "--mixture.short" in run.stdout
    assert "| torch\n" not in run.stderr and "| trl\n" not in run.stderr
    run = _run(sys.executable, "-X", "importtime", str(IN2), "train", "--help")
    assert run.returncode == 0 and run.stdout.startswith("usage: in2 train --config RECIPE")
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time")}
    assert {"in2.train.args", "trl.scripts._hf_argparser"} <= imported
    assert not imported & {"in2.train.sft", "trl.trainer.sft_trainer", "in2.train.model"}
    run = _run(str(IN2), "train", "--config", TRAIN, "--learning_rate", "abc")
    assert (run.returncode, run.stderr) == (2, "in2 train: error: --learning_rate: invalid float value 'abc'\n")
