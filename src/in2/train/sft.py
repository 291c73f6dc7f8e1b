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
from datetime import datetime, timezone
from pathlib import Path

import torch
from trl import SFTConfig, SFTTrainer, get_peft_config

from in2 import prompts, redact
from in2.cards import model_card
from in2.cpu import keep_freed_memory
from in2.errors import ConfigError
from in2.files import follow_umask
from in2.recipes import did_you_mean
from in2.tokenizer import chat_template_path
from in2.train import card, checkpoints, data, optim, parallel, prepare, tiling
from in2.train.allocator import expandable_segments
from in2.train.args import (
    In2ScriptArguments,
    TrainParser,
    argument_classes,
    config_flag,
    make_parser,
)
from in2.train.fsdp import FinishPartialForwards, reduce_in_weight_dtype
from in2.train.hub import HubPublisher, check_token
from in2.train.model import FLASH, attention_implementation, liger_kernels, load_model, rope_scaling
from in2.train.ulysses import UlyssesTrainer

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
        raise ConfigError(f"{path}: unknown field(s): {', '.join(did_you_mean(k, known) for k in unknown)}")


class In2SFTTrainer(SFTTrainer, UlyssesTrainer):
    """SFTTrainer whose model card is in2's, in the output folder and in every checkpoint folder, with
    whole-run figures after a resume, and whose checkpoints are complete once trainer_state.json exists;
    under sequence parallelism, with the token-mean loss and mid-epoch resume of in2.train.ulysses."""

    def __init__(self, *args, card: dict, **kwargs):
        self.card = card
        super().__init__(*args, **kwargs)
        reduce_in_weight_dtype(self.accelerator, self.model.dtype)
        self.accounting = checkpoints.RunAccounting(self)
        self.add_callback(self.accounting)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        if self.is_world_process_zero():
            status = f"in training, step {self.state.global_step} of {self.state.max_steps}"
            model_card.write(self.args.output_dir, card.context(self, status))

    def _save_checkpoint(self, model, trial):
        # the card first: trainer_state.json, which marks the checkpoint complete, stays the last file
        if self.is_world_process_zero():
            folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            status = f"checkpoint at step {self.state.global_step} of {self.state.max_steps}"
            model_card.write(folder, card.context(self, status))
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


def resolve_recipe(training_args: SFTConfig) -> None:
    """What `in2 train` and benchmarks/train_throughput.py both settle before TRL reads the recipe: a built-in
    chat template name (`mistral-instruct`) becomes its .jinja path, and Liger kernels turn off where they
    cannot run."""
    if training_args.chat_template_path:
        training_args.chat_template_path = chat_template_path(training_args.chat_template_path)
    training_args.use_liger_kernel = liger_kernels(training_args.use_liger_kernel)


def unpack_without_flash(model_args, training_args: SFTConfig, attention: str | None) -> None:
    """Packing off (with a warning) where FlashAttention was asked for and the attention fell back from it."""
    if model_args.attn_implementation in FLASH and attention not in FLASH and training_args.packing:
        logger.warning("packing needs %s to keep documents apart; training unpacked", model_args.attn_implementation)
        training_args.packing = training_args.padding_free = False


def _check(script_args: In2ScriptArguments, training_args: SFTConfig) -> None:
    if not script_args.dataset_name:
        raise ConfigError("dataset_name: required (an in2 dataset folder or a Hub dataset repo)")
    if training_args.hub_token:
        raise ConfigError("hub_token: keep tokens out of recipes and arguments; set HF_TOKEN or run `hf auth login`")
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise ConfigError("hub_model_id: required with push_to_hub (org/name of the model repo)")
    if script_args.push_checkpoints_every < 0:
        raise ConfigError("push_checkpoints_every: must be >= 0 (0: push the final model only)")


def train(script_args, training_args, model_args, recipe: str = "", hub_api=None) -> Path:
    """Train, save the final model with its card and the recipe, publish when asked; returns the output folder."""
    _check(script_args, training_args)
    resolve_recipe(training_args)
    optim.check(script_args, training_args, model_args)
    sp = parallel.check(script_args, training_args)
    parallel.settle_batch(script_args, training_args, sp)
    if os.environ.get("FSDP_ACTIVATION_CHECKPOINTING") == "true" and training_args.activation_checkpointing:
        # FSDP checkpoints activations itself; the trainer's would add an all-gather in every backward pass
        training_args.activation_checkpointing = training_args.gradient_checkpointing = False
    publisher = None
    if training_args.push_to_hub:
        if hub_api is None:
            check_token()
        publisher = HubPublisher(
            training_args.hub_model_id,
            training_args.hub_private_repo,
            api=hub_api,
            every=script_args.push_checkpoints_every,
        )
        training_args.push_to_hub = False  # in2 publishes: checkpoints to branches, never optimizer states

    want_eval = training_args.eval_strategy != "no"
    train_set, eval_set = data.load_splits(script_args, want_eval)  # before the model: a bad dataset fails fast
    dataset = data.dataset_info(script_args, train_set)
    if training_args.use_cpu or not torch.cuda.is_available():
        keep_freed_memory()
    model, tokenizer, attention = load_model(model_args, trust_remote_code=training_args.trust_remote_code)
    unpack_without_flash(model_args, training_args, attention)
    train_set, eval_set = prepare.splits(script_args, training_args, model_args, train_set, eval_set)  # as packed
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
    context = {
        "model_name": training_args.hub_model_id or output_dir.name,
        "hub_model_id": training_args.hub_model_id,
        "output_dir": str(output_dir),
        "base_model": script_args.base_model_id or model_args.model_name_or_path,
        "dataset": dataset,
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
        callbacks=[
            FinishPartialForwards(),
            *tiling.callbacks(script_args.tiled_mlp_tokens),
            *([publisher] if publisher else []),
        ],
        optimizer_cls_and_kwargs=optim.optimizer_cls_and_kwargs(script_args, training_args),
        card=context,
    )
    tiling.check(script_args.tiled_mlp_tokens, trainer.accelerator.distributed_type)
    resume = checkpoints.resume_point(output_dir, training_args.resume_from_checkpoint, trainer.args.should_save)
    if resume is not None:
        at = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        context["resumed"] = [*checkpoints.earlier_resumes(resume), {"step": checkpoints.saved_step(resume), "at": at}]
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        epochs = trainer.state.epoch or 0.0
        status = (
            f"finished after {trainer.state.global_step} optimizer steps "
            f"({epochs:.3g} epoch{'' if epochs == 1 else 's'})"
        )
        model_card.write(output_dir, card.context(trainer, status, train_loss=result.training_loss))
        (output_dir / RECIPE_COPY).write_text(context["recipe"] + "\n")
        if publisher is not None:
            commit = publisher.finish(output_dir)
            logger.warning("pushed %s to %s (%s)", output_dir, training_args.hub_model_id, commit[:10])
    # every process waits for the first to finish its card, then the process group is taken down: a process
    # that exits with it alive can abort in the communication threads' teardown (seen with gloo: SIGABRT,
    # "terminate called without an active exception", after the last save); `leave` then skips the teardown
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return output_dir


def prepare_only(script_args, training_args, model_args) -> Path:
    """`--prepare_only true`: tokenize the recipe's dataset into its prepared folder (in2.train.prepare)."""
    _check(script_args, training_args)
    resolve_recipe(training_args)
    if (why := prepare.supported(training_args)) is not None:
        raise ConfigError(f"prepare_only: TRL must tokenize this recipe inside the job: {why}")
    unpack_without_flash(model_args, training_args, attention_implementation(model_args.attn_implementation))
    train_set, eval_set = data.load_splits(script_args, training_args.eval_strategy != "no")
    tokenizer = prepare.load_tokenizer(model_args, training_args)
    return prepare.prepare(script_args, training_args, tokenizer, train_set, eval_set)


def main(argv: list[str] | None = None, parser: TrainParser | None = None) -> int:
    redact.scrub_logs()  # `accelerate launch -m in2.train.sft` starts here, not in in2.cli
    expandable_segments()
    script_args, training_args, model_args, recipe = parse(argv, parser)
    if script_args.prepare_only:
        print(f"prepared dataset in {prepare_only(script_args, training_args, model_args)}")
        return 0
    out = train(script_args, training_args, model_args, recipe)
    print(f"model and card written to {out}")
    return 0


def leave(code: int) -> None:
    """End this process with `code`. A process of a multi-process launch (WORLD_SIZE > 1) that finished leaves
    at once, once its logs and output are flushed: its work is saved, its trackers finished and its process
    group taken down by then, and the interpreter's teardown with the communication libraries loaded has still
    aborted a finished rank now and then (SIGABRT, "terminate called without an active exception", in the
    2-process gloo test of sequence parallelism after end_training), which fails the whole launch."""
    if code == 0 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(code)


if __name__ == "__main__":
    leave(main())
