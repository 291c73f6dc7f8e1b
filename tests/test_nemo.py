"""Mistral-Nemo-12B (128K window): its Tekken tokenizer offline, the chat template, the recipes, and
synthesis whose token counts hold at 128K."""

import json
from collections import Counter
from pathlib import Path

import pytest

from in2 import prompts
from in2.cli import main
from in2.evaluation.config import EvalConfig
from in2.recipes import load_config
from in2.synth.assemble import Assembler, FillerPool, exact_tokens, verify
from in2.synth.config import CorpusConfig, SynthConfig
from in2.synth.corpus import iter_texts
from in2.synth.qa import QA, QAItem
from in2.synth.segment import Segmenter
from in2.train import sft
from tests.conftest import TEKKEN, tiny_mistral

ROOT = Path(__file__).resolve().parents[1]
NEMO = ROOT / "recipes" / "mistral-nemo-12b"

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there"}],
    [
        {"role": "user", "content": prompts.film_user("Line one.\n\nLine two,  with  spaces.\n", "Which line?")},
        {"role": "assistant", "content": "Line two."},
        {"role": "user", "content": "And the naïve café in 東京 — why?"},
    ],
    [
        {"role": "user", "content": " leading space\tand tab"},
        {"role": "assistant", "content": "\nnewline first"},
        {"role": "user", "content": "code:\n    def f(x):\n        return x  # ok\n"},
    ],
]


def _reference(conversation: list[dict]) -> list[int]:
    """mistral-common's own instruct encoding of a conversation ending with a user turn."""
    from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    from in2.assets import resolve

    tokenizer = MistralTokenizer.from_file(resolve(TEKKEN["name_or_path"]))
    kinds = {"user": UserMessage, "assistant": AssistantMessage}
    messages = [kinds[m["role"]](content=m["content"]) for m in conversation]
    return tokenizer.encode_chat_completion(ChatCompletionRequest(messages=messages)).tokens


# --- tokenizer and chat template ------------------------------------------------------------------


def test_tekken_loads_offline_as_a_fast_tokenizer_with_mistral_commons_ids(tekken_tokenizer):
    from pydoc_data import topics

    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    from transformers import TokenizersBackend

    from in2.assets import resolve

    assert isinstance(tekken_tokenizer, TokenizersBackend) and len(tekken_tokenizer) == 131072
    assert (tekken_tokenizer.bos_token_id, tekken_tokenizer.eos_token_id) == (1, 2)
    assert tekken_tokenizer.pad_token is not None
    reference = Tekkenizer.from_file(resolve(TEKKEN["name_or_path"]))
    texts = [t for _, t in sorted(topics.topics.items())[:40]] + ["naïve café in 東京 — 123456 tokens\n\n\tx"]
    ours = tekken_tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert ours == [reference.encode(t, bos=False, eos=False) for t in texts]
    assert sum(len(x) for x in ours) > 20_000


@pytest.mark.parametrize("template", ["mistral-tekken", None], ids=["built-in", "tokenizer's own"])
def test_chat_template_matches_mistral_commons_instruct_encoding(template, tekken_tokenizer):
    """Both the built-in mistral-tekken.jinja and the template the Tekken vocabulary ships with (via
    mistral-common) produce exactly Mistral's own token ids; the built-in one is what the recipes use."""
    from in2.tokenizer import TokenizerConfig, load_tokenizer

    tok = tekken_tokenizer if template else load_tokenizer(TokenizerConfig(**{**TEKKEN, "chat_template": None}))
    for conversation in CONVERSATIONS:
        ids = tok.apply_chat_template(conversation, tokenize=True, add_generation_prompt=True, return_dict=False)
        assert ids == _reference(conversation), conversation
    # a training row (prompt + answer) is the reference prompt followed by the answer and </s>
    row = [CONVERSATIONS[1][0], CONVERSATIONS[1][1]]
    ids = tok.apply_chat_template(row, tokenize=True, return_dict=False)
    assert ids[-1] == tok.eos_token_id and ids[:-1] == _reference(CONVERSATIONS[1])[: len(ids) - 1]


def test_loss_mask_covers_exactly_the_answer_tokens(tmp_path, tekken_tokenizer, dataset_folder):
    """As for mistral-instruct: a tiny Mistral with the Tekken tokenizer, TRL's completion-only loss."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    model = tiny_mistral(len(tekken_tokenizer))
    args = SFTConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_length=None, dataset_num_proc=1
    )
    rows = load_dataset(str(dataset_folder), split="train")
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tekken_tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for i in range(4):
        labels = batch["labels"][i]
        assert tekken_tokenizer.decode(labels[labels != -100]) == rows[i]["completion"][0]["content"] + "</s>"
        ids = batch["input_ids"][i][batch["attention_mask"][i].bool()]
        start = int((labels != -100).nonzero()[0])
        assert tekken_tokenizer.decode(ids[:start]).endswith("[/INST]") and int(ids[start - 1]) == 4


# --- recipes --------------------------------------------------------------------------------------


def test_nemo_training_recipes_target_128k_with_tekken_and_config_fields_for_rope():
    recipes = {p.name: p for p in NEMO.glob("sft*.yaml")}
    assert set(recipes) == {"sft_lora.yaml", "sft_full.yaml"}
    for path in recipes.values():
        script_args, training_args, model_args, _ = sft.parse(["--config", str(path), "--use_cpu", "true"])
        assert model_args.model_name_or_path == "mistralai/Mistral-Nemo-Instruct-2407"
        assert training_args.max_length == 131072 and training_args.chat_template_path == "mistral-tekken"
        assert training_args.activation_checkpointing and training_args.bf16 and training_args.use_liger_kernel
        sft.resolve_recipe(training_args)  # as in2 train settles it: the built-in template's path
        assert Path(training_args.chat_template_path).read_text().count("'[INST]'") == 1
        assert model_args.rope_theta == 1e6 and model_args.rope_scaling is None  # fields, kept at the model's
        assert script_args.global_batch_size == 128 and training_args.learning_rate > 0
    full = sft.parse(["--config", str(recipes["sft_full.yaml"]), "--use_cpu", "true"])
    assert full[0].sequence_parallel_size == 8 and not full[2].use_peft


def test_nemo_data_and_eval_recipes():
    cfg = load_config(SynthConfig, NEMO / "in2_data.yaml")
    assert cfg.tokenizer.name_or_path == TEKKEN["name_or_path"] and cfg.tokenizer.chat_template == "mistral-tekken"
    c = cfg.context
    assert (c.min_context_tokens, c.max_length) == (4096, 131072) and c.max_length - c.max_context_tokens >= 768
    assert c.num_length_buckets >= 8  # lengths uniform over 4K-128K, as FILM-7B's over 4K-32K
    ev = load_config(EvalConfig, NEMO / "eval.yaml")
    assert ev.probes.lengths == [32768, 65536, 131072] and ev.probes.pools == "film"
    assert ev.tokenizer.name_or_path == TEKKEN["name_or_path"] and "[INST]{prompt}[/INST]" == ev.probes.raw_template
    assert "ruler" in ev.suites and ev.ruler.lengths[-1] == 131072


def test_nemo_recipe_dry_run_offline(tmp_path, capsys, monkeypatch, stdlib_corpus):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    args = ["--dry-run", f"corpus.source={stdlib_corpus}", f"generator.cache_dir={tmp_path / 'cache'}"]
    assert main(["synth", "--config", str(NEMO / "in2_data.yaml"), *args]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[: out.rindex("}") + 1])
    cfg = load_config(SynthConfig, NEMO / "in2_data.yaml")
    qa_rows = cfg.mixture.fine_grained + cfg.mixture.integration + cfg.mixture.short
    assert report["requests"] == round(qa_rows * cfg.qa.oversample) and report["sampled_already_cached"] == 0
    assert 200 * report["requests"] < report["prompt_tokens"] < 2000 * report["requests"]  # counted with Tekken


def test_contexts_up_to_128k_have_exact_token_counts(tekken_tokenizer, stdlib_corpus):
    """The 128K data recipe's context settings on real text: rows in the top length bucket, every count
    re-tokenized through the chat template."""
    cfg = load_config(SynthConfig, NEMO / "in2_data.yaml").context
    texts = list(iter_texts(CorpusConfig(source=str(stdlib_corpus))))
    sources = Segmenter(tekken_tokenizer, 128, 4096)(texts, Counter())
    pool = FillerPool(sources)
    assert sum(pool.tokens) > 2 * cfg.max_context_tokens  # enough distinct filler for a 128K context
    asm = Assembler(tekken_tokenizer, cfg, seed=3)
    top = next(k for k in range(64) if asm.target(k) > cfg.max_context_tokens - 16_000)  # the top bucket
    items = [
        (QAItem(f"q{k}", "fine_grained", "fine_grained", src, [0]), QA(f"Which detail is {k}?", f"Detail {k}."))
        for k, src in enumerate(sources[: top + 1])
    ]
    rows = list(asm.rows(items, pool))
    longest = max(rows, key=lambda r: r["num_tokens"])
    assert longest["context_tokens"] > cfg.max_context_tokens - 16_000 > 110_000
    sample = [longest, *rows[:3]]
    assert exact_tokens(tekken_tokenizer, sample) == [r["num_tokens"] for r in sample]  # exact, not within a margin
    report = verify(tekken_tokenizer, sample, cfg.max_length, len(sample), seed=0)
    assert report["max_abs_error_tokens"] == 0 and max(r["num_tokens"] for r in sample) <= cfg.max_length


def test_rope_scaling_is_a_config_field_applied_on_top_of_the_rope_base(tiny_model):
    import torch

    from in2.errors import ConfigError
    from in2.train.args import In2ModelConfig
    from in2.train.model import load_model

    yarn = '{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024}'  # JSON, as on a CLI
    args = In2ModelConfig(model_name_or_path=str(tiny_model), rope_theta=1e7, rope_scaling=yarn)
    model, _, _ = load_model(args)
    params = model.config.rope_parameters
    assert params["rope_type"] == "yarn" and params["factor"] == 4.0 and params["rope_theta"] == 1e7
    plain, _, _ = load_model(In2ModelConfig(model_name_or_path=str(tiny_model), rope_theta=1e7))
    assert not torch.allclose(model.model.rotary_emb.inv_freq, plain.model.rotary_emb.inv_freq)
    with pytest.raises(ConfigError, match="^rope_scaling: .*yarn"):
        load_model(In2ModelConfig(model_name_or_path=str(tiny_model), rope_scaling={"rope_type": "yarn"}))
    with pytest.raises(ConfigError, match="^rope_scaling: not a mapping"):
        load_model(In2ModelConfig(model_name_or_path=str(tiny_model), rope_scaling="yarn x4"))


def test_training_loads_a_fast_tokenizer_from_a_mistral_repo_that_also_ships_tekken_json(tmp_path, tekken_tokenizer):
    """Mistral's Hub repos carry tokenizer.json and tekken.json; transformers would pick mistral-common's
    backend for them, whose encoding ignores the chat template that synthesis counted tokens with."""
    import shutil

    from transformers import TokenizersBackend

    from in2.assets import resolve
    from in2.train.args import In2ModelConfig
    from in2.train.model import load_model

    tiny_mistral(len(tekken_tokenizer)).save_pretrained(tmp_path)
    tekken_tokenizer.save_pretrained(tmp_path)
    shutil.copyfile(resolve(TEKKEN["name_or_path"]), tmp_path / "tekken.json")
    settings = json.loads((tmp_path / "tokenizer_config.json").read_text())
    settings["tokenizer_class"] = "LlamaTokenizerFast"  # what Mistral-Nemo-Instruct-2407's repo declares
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
    _, tokenizer, _ = load_model(In2ModelConfig(model_name_or_path=str(tmp_path)))
    assert isinstance(tokenizer, TokenizersBackend)
    row = [CONVERSATIONS[1][0], CONVERSATIONS[1][1]]
    assert tokenizer.apply_chat_template(row, tokenize=True, return_dict=False) == tekken_tokenizer.apply_chat_template(
        row, tokenize=True, return_dict=False
    )
