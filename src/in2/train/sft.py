"""IN2 supervised fine-tuning with TRL's SFTTrainer, configured by one recipe YAML.

    in2 train --config recipes/demo/sft.yaml
    accelerate launch --config_file accelerate_configs/fsdp.yaml -m in2.train.sft --config recipes/film-7b/sft_full.yaml

Arguments are TRL's (ScriptArguments, SFTConfig, ModelConfig) plus the fields in in2.train.args; any of
them can be overridden on the command line (`--learning_rate 2e-6`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch
from trl import SFTConfig, SFTTrainer, get_peft_config

from in2 import prompts, redact
from in2.assets import loading
from in2.cards import model_card
from in2.cpu import keep_freed_memory
from in2.errors import ConfigError
from in2.files import follow_umask
from in2.tokenizer import chat_template_path
from in2.train import checkpoints, optim, parallel
from in2.train.args import (
    In2ScriptArguments,
    TrainParser,
    argument_classes,
    config_flag,
    gradient_accumulation,
    make_parser,
)
from in2.train.fsdp import FinishPartialForwards
from in2.train.hub import HubPublisher, check_token
from in2.train.model import FLASH, liger_kernels, load_model, rope_scaling

logger = logging.getLogger("in2.train")
RECIPE_COPY = "in2_recipe.yaml"


def parse(argv: list[str] | None = None, parser: TrainParser | None = None):
    """(script_args, training_args, model_args, recipe text) from `--config recipe.yaml` plus flags."""
    argv = config_flag(list(sys.argv[1:] if argv is None else argv))
    recipe, path = "", None
    if "--config" in argv:
        path = Path(argv[argv.index("--config") + 1])
        if not path.is_file():
            raise FileNotFoundError(f"--config: recipe {path} does not exist")
        recipe = path.read_text()
        _check_keys(path, recipe)
        flags = [a for i, a in enumerate(argv) if a != "--config" and (i == 0 or argv[i - 1] != "--config")]
        if flags:
            recipe += f"\n# command-line overrides: {' '.join(flags)}\n"
    try:
        script_args, training_args, model_args = (
            parser or make_parser(prog=f"python -m {__name__}")
        ).parse_args_and_config(argv)
    except ValueError as e:  # unknown recipe keys, invalid TRL/transformers field values
        raise ConfigError(f"{path if recipe else 'arguments'}: {e}") from None
    return script_args, training_args, model_args, redact.text(recipe)


def _check_keys(path: Path, text: str) -> None:
    """Name unknown recipe keys (with a close match) before any dataclass validates values."""
    import difflib
    from dataclasses import fields

    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a YAML mapping of field: value")
    known = {f.name for cls in argument_classes() for f in fields(cls)} | {"env"}
    unknown = sorted(set(data) - known)
    if unknown:
        hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, known, 1)) else k for k in unknown]
        raise ConfigError(f"{path}: unknown field(s): {', '.join(hints)}")


class In2SFTTrainer(SFTTrainer):
    """SFTTrainer whose model card is in2's, in the output folder and in every checkpoint folder, with
    whole-run figures after a resume, and whose checkpoints are complete once trainer_state.json exists."""

    def __init__(self, *args, card: dict, **kwargs):
        self.card = card
        super().__init__(*args, **kwargs)
        self.accounting = checkpoints.RunAccounting(self)
        self.add_callback(self.accounting)

    def card_context(self, status: str, train_loss: float | None = None) -> dict:
        state = self.state
        logs = state.log_history
        last = {k: next((h[k] for h in reversed(logs) if k in h), None) for k in ("loss", "eval_loss", "num_tokens")}
        if train_loss is not None:  # this session's mean: make it the whole run's
            train_loss = checkpoints.whole_run_loss(logs, self.accounting.resumed_at, state.global_step, train_loss)
        results = [("optimizer steps", state.global_step), ("epochs", round(state.epoch or 0.0, 3))]
        results += [
            (name, _fmt(v))
            for name, v in (
                ("last logged training loss", last["loss"]),
                ("mean training loss", train_loss),
                ("eval loss", last["eval_loss"]),
                ("training tokens", last["num_tokens"]),
            )
            if v is not None
        ]
        return {**self.card, "status": status, "results": results, "hyperparameters": hyperparameters(self)}

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        if self.is_world_process_zero():
            status = f"in training, step {self.state.global_step} of {self.state.max_steps}"
            model_card.write(self.args.output_dir, self.card_context(status))

    def _save_checkpoint(self, model, trial):
        # the card first: trainer_state.json, which marks the checkpoint complete, stays the last file
        if self.is_world_process_zero():
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            status = f"checkpoint at step {self.state.global_step} of {self.state.max_steps}"
            model_card.write(folder, self.card_context(status))
        super()._save_checkpoint(model, trial)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:  # safetensors writes model.safetensors as 0600: give it the user's umask
            follow_umask(output_dir or self.args.output_dir)

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        # Each process writes its own RNG state (and shards) with no barrier before process 0 writes
        # trainer_state.json; wait, so that file is written only once every process's files are whole.
        self.accelerator.wait_for_everyone()


def _fmt(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def hyperparameters(trainer: SFTTrainer) -> list[tuple[str, str]]:
    """What the card reports about the optimisation, read back from the trainer."""
    a = trainer.args
    world = a.world_size // parallel.degree(trainer)  # data-parallel processes
    rows = [
        (
            "global batch",
            f"{a.per_device_train_batch_size * a.gradient_accumulation_steps * world} "
            f"= {a.per_device_train_batch_size} per device x {a.gradient_accumulation_steps} "
            f"accumulation x {world} processes",
        ),
        ("learning rate", f"{a.learning_rate:g}"),
        (
            "schedule",
            f"{a.lr_scheduler_type.value if hasattr(a.lr_scheduler_type, 'value') else a.lr_scheduler_type}, "
            f"warm-up {a.warmup_steps:g}{' of the steps' if a.warmup_steps < 1 else ' steps'}",
        ),
        ("epochs", f"{a.num_train_epochs:g}" if a.max_steps <= 0 else f"max {a.max_steps} steps"),
        (
            "optimizer",
            f"{optim.describe(a, trainer.optimizer_cls_and_kwargs)}, weight decay {a.weight_decay:g}, "
            f"grad clip {a.max_grad_norm:g}",
        ),
        ("max length", str(a.max_length)),
        ("packing", f"{a.packing_strategy}" if a.packing else "off"),
        (
            "precision",
            f"{str(trainer.model.dtype).removeprefix('torch.')} weights, "
            f"{'bf16 autocast' if a.bf16 else 'fp16 autocast' if a.fp16 else 'no autocast'}",
        ),
        ("activation checkpointing", str(bool(a.activation_checkpointing))),
        ("distributed", distributed(trainer)),
        ("attention", trainer.card["attention"]),
        ("Liger kernels", "on" if a.use_liger_kernel else "off"),
        ("seed", str(a.seed)),
    ]
    rope = trainer.card.get("rope_theta")
    if rope is not None:
        rows.append(("RoPE base (rope_theta)", f"{rope:g}"))
    if trainer.card.get("rope_scaling"):
        rows.append(("RoPE scaling", str(trainer.card["rope_scaling"])))
    if trainer.card["lora"]:
        rows.append(("LoRA", trainer.card["lora"]))
    return rows


def distributed(trainer: SFTTrainer) -> str:
    """How the run was spread: accelerate's distributed type, with the ZeRO stage or FSDP settings."""
    state = trainer.accelerator.state
    kind = getattr(state.distributed_type, "value", str(state.distributed_type))
    if state.deepspeed_plugin is not None:
        kind += f", ZeRO stage {state.deepspeed_plugin.zero_stage}"
    if parallel.degree(trainer) > 1:
        kind += f", Ulysses sequence parallel over {parallel.degree(trainer)} GPUs"
    if getattr(state, "fsdp_plugin", None) is not None:
        plugin = state.fsdp_plugin
        offload = plugin.cpu_offload  # FSDP1: CPUOffload(offload_params=...); FSDP2: (CPU)OffloadPolicy
        on = getattr(offload, "offload_params", type(offload).__name__ == "CPUOffloadPolicy")
        kind += f", FSDP{plugin.fsdp_version}, CPU offload {'on' if on else 'off'}"
    return kind


def resolve_recipe(training_args: SFTConfig) -> None:
    """What `in2 train` and benchmarks/train_throughput.py both settle before TRL reads the recipe: a built-in
    chat template name (`mistral-instruct`) becomes its .jinja path, and Liger kernels turn off where they
    cannot run."""
    if training_args.chat_template_path:
        training_args.chat_template_path = chat_template_path(training_args.chat_template_path)
    training_args.use_liger_kernel = liger_kernels(training_args.use_liger_kernel)


def _check(script_args: In2ScriptArguments, training_args: SFTConfig) -> None:
    if not script_args.dataset_name:
        raise ConfigError("dataset_name: required (an in2 dataset folder or a Hub dataset repo)")
    if training_args.hub_token:
        raise ConfigError("hub_token: keep tokens out of recipes and arguments; set HF_TOKEN or run `hf auth login`")
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise ConfigError("hub_model_id: required with push_to_hub (org/name of the model repo)")


def load_splits(script_args: In2ScriptArguments, want_eval: bool):
    """(train, eval or None) from the dataset folder or Hub repo at the requested config and revision."""
    from datasets import load_dataset

    at = f" at revision {script_args.dataset_revision}" if script_args.dataset_revision else ""
    with loading("dataset_name", f"{script_args.dataset_name!r}, config {script_args.dataset_config!r}{at}"):
        ds = load_dataset(
            script_args.dataset_name, name=script_args.dataset_config, revision=script_args.dataset_revision
        )
    for field, split, needed in (
        ("dataset_train_split", script_args.dataset_train_split, True),
        ("dataset_test_split", script_args.dataset_test_split, want_eval),
    ):
        if needed and split not in ds:
            raise ConfigError(f"{field}: {script_args.dataset_name} has no split {split!r} (it has {sorted(ds)})")
    return ds[script_args.dataset_train_split], ds[script_args.dataset_test_split] if want_eval else None


def dataset_info(script_args: In2ScriptArguments, train) -> dict:
    info = {
        "name": script_args.dataset_name,
        "config": script_args.dataset_config,
        "revision": script_args.dataset_revision,
        "train_split": script_args.dataset_train_split,
        "train_rows": len(train),
        "rows_per_type": dict(sorted(Counter(train["type"]).items())) if "type" in train.column_names else {},
        "content_hash": None,
    }
    manifest = Path(script_args.dataset_name) / "manifest.json"
    if manifest.is_file():
        import json

        info["content_hash"] = json.loads(manifest.read_text()).get("content_hash")
    return info


def train(script_args, training_args, model_args, recipe: str = "", hub_api=None) -> Path:
    """Train, save the final model with its card and the recipe, publish when asked; returns the output folder."""
    _check(script_args, training_args)
    resolve_recipe(training_args)
    optim.check(script_args, training_args, model_args)
    sp = parallel.check(script_args, training_args)
    if script_args.global_batch_size:
        try:
            training_args.gradient_accumulation_steps = gradient_accumulation(
                script_args.global_batch_size, training_args.per_device_train_batch_size, training_args.world_size // sp
            )
        except ValueError as e:
            raise ConfigError(f"global_batch_size: {e}") from None
    if os.environ.get("FSDP_ACTIVATION_CHECKPOINTING") == "true" and training_args.activation_checkpointing:
        # FSDP checkpoints activations itself; the trainer's would add an all-gather in every backward pass
        training_args.activation_checkpointing = training_args.gradient_checkpointing = False
    publisher = None
    if training_args.push_to_hub:
        if hub_api is None:
            check_token()
        publisher = HubPublisher(training_args.hub_model_id, training_args.hub_private_repo, api=hub_api)
        training_args.push_to_hub = False  # in2 publishes: checkpoints to branches, never optimizer states

    want_eval = training_args.eval_strategy != "no"
    train_set, eval_set = load_splits(script_args, want_eval)  # before the model: a bad dataset fails fast
    if training_args.use_cpu or not torch.cuda.is_available():
        keep_freed_memory()
    model, tokenizer, attention = load_model(model_args, trust_remote_code=training_args.trust_remote_code)
    if model_args.attn_implementation in FLASH and attention not in FLASH and training_args.packing:
        logger.warning("packing needs %s to keep documents apart; training unpacked", model_args.attn_implementation)
        training_args.packing = training_args.padding_free = False
    parallel.configure(training_args, sp, model.config, attention)

    peft_config = get_peft_config(model_args)
    method = "full fine-tune" if peft_config is None else "QLoRA (4-bit base)" if model_args.load_in_4bit else "LoRA"
    lora = None
    if peft_config is not None:
        lora = (
            f"r {peft_config.r}, alpha {peft_config.lora_alpha}, dropout {peft_config.lora_dropout}, "
            f"targets {peft_config.target_modules}"
        )
    output_dir = Path(training_args.output_dir)
    card = {
        "model_name": training_args.hub_model_id or output_dir.name,
        "hub_model_id": training_args.hub_model_id,
        "output_dir": str(output_dir),
        "base_model": script_args.base_model_id or model_args.model_name_or_path,
        "dataset": dataset_info(script_args, train_set),
        "method": method,
        "lora": lora,
        "attention": attention,
        "rope_theta": model_args.rope_theta,
        "rope_scaling": rope_scaling(model_args.rope_scaling),
        "max_length": training_args.max_length,
        "license": script_args.license,
        "prompt_template": prompts.load(prompts.FILM_CONTEXT),
        "recipe": recipe.strip() or "# arguments given on the command line only",
        "resumed": [],
    }
    trainer = In2SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[FinishPartialForwards(), *([publisher] if publisher else [])],
        optimizer_cls_and_kwargs=optim.optimizer_cls_and_kwargs(script_args, training_args),
        card=card,
    )
    resume = checkpoints.resume_point(output_dir, training_args.resume_from_checkpoint, trainer.args.should_save)
    if resume is not None:
        at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        card["resumed"] = [*checkpoints.earlier_resumes(resume), {"step": checkpoints.saved_step(resume), "at": at}]
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        epochs = trainer.state.epoch or 0.0
        status = (
            f"finished after {trainer.state.global_step} optimizer steps "
            f"({epochs:.3g} epoch{'' if epochs == 1 else 's'})"
        )
        model_card.write(output_dir, trainer.card_context(status, train_loss=result.training_loss))
        (output_dir / RECIPE_COPY).write_text(card["recipe"] + "\n")
        if publisher is not None:
            commit = publisher.finish(output_dir)
            logger.warning("pushed %s to %s (%s)", output_dir, training_args.hub_model_id, commit[:10])
    if hasattr(trainer, "end"):
        trainer.end()
    return output_dir


def main(argv: list[str] | None = None, parser: TrainParser | None = None) -> int:
    redact.scrub_logs()  # `accelerate launch -m in2.train.sft` starts here, not in in2.cli
    script_args, training_args, model_args, recipe = parse(argv, parser)
    out = train(script_args, training_args, model_args, recipe)
    print(f"model and card written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
