import re
from pathlib import Path

import pytest

from in2.errors import ConfigError
from in2.recipes import load_config
from in2.synth.config import SynthConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("recipe", sorted(ROOT.glob("recipes/*/in2_data.yaml")))
def test_recipes_parse_and_validate(recipe):
    cfg = load_config(SynthConfig, recipe)
    assert isinstance(cfg, SynthConfig)
    assert cfg.context.min_context_tokens < cfg.context.max_context_tokens < cfg.context.max_length


def test_film_recipe_holds_the_papers_numbers():
    cfg = load_config(SynthConfig, ROOT / "recipes/film-7b/in2_data.yaml")
    assert (cfg.corpus.source, cfg.corpus.name) == ("allenai/c4", "realnewslike")
    assert cfg.corpus.min_segment_tokens == 128
    assert (cfg.context.min_context_tokens, cfg.context.max_length) == (4096, 32768)
    m = cfg.mixture
    assert (m.fine_grained, m.integration, m.short, m.general) == (1_100_000, 300_000, 150_000, 200_000)
    assert cfg.general.source == "Open-Orca/OpenOrca"


def test_overrides_are_typed():
    cfg = load_config(
        SynthConfig, None, ["generator.temperature=0.3", "mixture.short=0", "corpus.source=x.jsonl", "seed=7"]
    )
    assert cfg.generator.temperature == 0.3 and cfg.mixture.short == 0 and cfg.seed == 7
    assert cfg.corpus.source == "x.jsonl"


@pytest.mark.parametrize(
    "override, field",
    [
        (["corpus.textfield=body"], "corpus.textfield"),
        (["nope=1"], "nope"),
        (["mixture.short=-1"], "mixture.short"),
        (["mixture.max_file_mb=0"], "mixture.max_file_mb"),
        (["mixture.sort_buffer_mb=-5"], "mixture.sort_buffer_mb"),
        (["context.min_context_tokens=9000", "context.max_context_tokens=8000"], "context.min_context_tokens"),
        (["context.max_context_tokens=40000"], "context.max_context_tokens"),
        (["generator.backend=foo"], "generator.backend"),
        (["generator.max_tokens=lots"], "generator.max_tokens"),
        (["context.separator=' | '"], "context.separator"),
        (["context.length_tolerance_tokens=4000"], "context.length_tolerance_tokens"),  # wider than a bucket
        (["context.length_tolerance_tokens=-1"], "context.length_tolerance_tokens"),
        (["shard_index=3", "num_shards=2"], "shard_index"),
        (["corpus.source=''"], "corpus.source"),  # "" would mean the current directory
        (["general.source=' '"], "general.source"),
        (["decontam.sources=[{fields: [context]}]"], "decontam.sources[0].source"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        load_config(SynthConfig, None, override)


def test_bad_file_is_named(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("corpus:\n  sourse: x\n")
    with pytest.raises(ConfigError, match=r"r\.yaml.*corpus\.sourse"):
        load_config(SynthConfig, bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(SynthConfig, tmp_path / "missing.yaml")


def test_film_recipe_decontaminates_against_every_evaluation_set():
    cfg = load_config(SynthConfig, ROOT / "recipes/film-7b/in2_data.yaml")
    sources = [(s.source, s.name, s.split) for s in cfg.decontam.sources]
    assert cfg.decontam.ngram == 10
    assert sum(s == "THUDM/LongBench" for s, _, _ in sources) == 9
    assert {sp for s, _, sp in sources if s == "In2Training/VaLProbing-32K"} == {
        "document_bi_32k",
        "code_backward_32k",
        "database_forward_32k",
    }
    with pytest.raises(ConfigError, match=r"decontam\.sources\[0\]\.fieldz"):
        load_config(SynthConfig, None, ["decontam.sources=[{source: x, fieldz: [a]}]"])


@pytest.mark.parametrize(
    "argv, field",
    [
        (
            ["synth", "--dry-run", "--config", "recipes/demo/in2_data.yaml", "tokenizer.name_or_path=org/not-there"],
            "tokenizer.name_or_path",
        ),
        (
            ["train", "--config", "recipes/demo/sft.yaml", "--model_name_or_path", "org/not-there", "--gguf_file", ""],
            "model_name_or_path",
        ),
        (
            ["eval", "--config", "recipes/demo/eval.yaml", "models=[{name: x, generator: {model: /no/such/model}}]"],
            "generator.model",
        ),
        (
            ["eval", "--config", "recipes/demo/eval.yaml", "models=[{name: x, generator: {gguf_file: no.gguf}}]"],
            "generator.gguf_file",
        ),
        (["synth", "--dry-run", "--config", "recipes/demo/in2_data.yaml", "corpus.source=no-org/no-data"], "dataset"),
        (["train", "--config", "recipes/demo/sft.yaml", "--dataset_name", "no-org/no-data"], "dataset_name"),
    ],
)
def test_a_model_tokenizer_or_dataset_that_cannot_load_names_its_field(
    argv, field, tmp_path, capsys, monkeypatch, dataset_folder
):
    from in2.cli import main

    monkeypatch.chdir(ROOT)
    data = [] if "--dataset_name" in argv else ["--dataset_name", str(dataset_folder), "--dataset_config", "default"]
    out = {"synth": [f"output_dir={tmp_path}/d"], "train": ["--output_dir", str(tmp_path / "c"), *data]}.get(
        argv[0], []
    )
    out = out or [f"output_dir={tmp_path}/r", f"probes.output_dir={tmp_path}/p", "model_card=null"]
    assert main(argv + out) == 2
    err = capsys.readouterr().err
    assert f"in2: error: {field}: cannot load" in err and "Traceback" not in err
    if argv[0] == "eval":  # refused before any probe is built, not after minutes of building them
        assert not (tmp_path / "p").exists()


def test_an_eval_whose_model_card_folder_is_not_a_checkpoint_stops_before_its_suites(tmp_path, capsys, monkeypatch):
    """`make eval` before `make train`: one line naming model_card at once, not a traceback after the suites."""
    from in2.cli import main

    monkeypatch.chdir(ROOT)
    argv = ["eval", "--config", "recipes/demo/eval.yaml", f"output_dir={tmp_path}/r", f"probes.output_dir={tmp_path}/p"]
    assert main([*argv, f"model_card={tmp_path}/no-checkpoint"]) == 2
    assert f"model_card: {tmp_path}/no-checkpoint has no in2_card.json" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()  # no probe was built
