"""The recipe's argument groups: TRL's ScriptArguments, SFTConfig and ModelConfig, extended for IN2, and
`in2 train`'s parser over them (TRL's `make_parser(subparsers)` pattern)."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import textwrap
import typing
from dataclasses import dataclass

from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

from in2.arguments import OneLineErrors, default_of, first_sentence, show, type_name
from in2.recipes import option
from in2.train import HELP


@dataclass
class In2ScriptArguments(ScriptArguments):
    """Which dataset to train on and the run-level settings that are not SFTConfig fields."""

    dataset_revision: str | None = option(None, "Tag, branch or commit of the Hub dataset repo, e.g. v1.0.0.")
    dataset_test_split: str = option("validation", "Split evaluated when eval_strategy is not 'no'.")
    global_batch_size: int | None = option(
        None,
        "Examples per optimizer step over all processes. When set, gradient_accumulation_steps is "
        "derived as global_batch_size / (per_device_train_batch_size x number of processes).",
    )
    base_model_id: str | None = option(
        None, "Hub id of the base model for the model card, when model_name_or_path is a local path."
    )
    license: str | None = option(None, "License of the trained model, for its card.")
    push_checkpoints_every: int = option(
        1,
        "With push_to_hub: upload every Nth saved checkpoint (the Nth, 2Nth, ... save of the run, counted from "
        "global_step / save_steps, so a resumed run keeps the cadence) to its own branch; 0: the final model "
        "only. Each FILM-7B full checkpoint is ~29 GB of fp32 weights (docs/training.md).",
    )
    kahan_summation: bool = option(
        False,
        "Train bf16 weights with torch-optimi's Kahan-compensated AdamW instead of `optim` (an AdamW), "
        "so that updates far below bf16's resolution (the paper's LR 1e-6) are not rounded away. "
        "See in2.train.optim.",
    )
    prepared_dataset_dir: str | None = option(
        None,
        "Folder of tokenized datasets, one subfolder per dataset, tokenizer, chat template and TRL preparation "
        "settings; None: <output_dir>/prepared-data. On a filesystem every node reads. See in2.train.prepare.",
    )
    prepare_only: bool = option(
        False,
        "Tokenize the dataset into prepared_dataset_dir with dataset_num_proc processes (default: every CPU) and "
        "exit, before a multi-process training job (accelerate_configs/launch.slurm runs it first).",
    )
    sequence_parallel_size: int | None = option(
        None,
        "GPUs that share each sequence (Ulysses sequence parallelism through DeepSpeed, accelerate's "
        "ParallelismConfig sp_backend=deepspeed), for sequences longer than one GPU holds. Needs a DeepSpeed "
        "launch (accelerate_configs/deepspeed_zero3_sp8.yaml); None takes the accelerate config's "
        "parallelism_config_sp_size, else 1. See in2.train.parallel.",
    )
    tiled_mlp_tokens: int | None = option(
        None,
        "Run each decoder MLP over slices of this many positions, forward and backward, so its intermediate "
        "activations exist for one slice at a time (ALST's tiled MLP): what lets a 64K-128K row fit one GPU. "
        "Costs one more MLP forward per layer; single-process training only; None: off. See in2.train.tiling.",
    )


@dataclass
class In2ModelConfig(ModelConfig):
    """TRL's ModelConfig plus GGUF weights, the RoPE base and RoPE scaling."""

    gguf_file: str | None = option(
        None, "GGUF file inside model_name_or_path; its weights are converted once to a cached folder."
    )
    rope_theta: float | None = option(
        None, "RoPE base to train with; None keeps the model's. The paper's ablation favours 10x the default."
    )
    rope_scaling: dict | str | None = option(
        None,
        "RoPE scaling merged into the model config's rope_parameters, as a mapping in the recipe or JSON "
        'on the command line, e.g. {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": '
        "32768}; None keeps the model's.",
    )


def gradient_accumulation(global_batch_size: int, per_device: int, world_size: int) -> int:
    """Accumulation steps that make `per_device x steps x world_size == global_batch_size`."""
    per_step = per_device * world_size
    if global_batch_size <= 0 or global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not a positive multiple of per_device_train_batch_size "
            f"({per_device}) x processes ({world_size}) = {per_step}"
        )
    return global_batch_size // per_step


USAGE = "%(prog)s --config RECIPE [--field VALUE ...]"
DESCRIPTION = (
    "Fine-tune on an IN2 dataset with TRL's SFTTrainer, from a training recipe (e.g. recipes/demo/sft.yaml). "
    "Every recipe field is also an option, --field VALUE (or --field=VALUE), which overrides the recipe: "
    "e.g. --learning_rate 2e-6 --max_steps 10. The fields are TRL's (script arguments, SFTConfig, ModelConfig) "
    "and in2's own below."
)


def argument_classes() -> tuple[type, ...]:
    return (In2ScriptArguments, SFTConfig, In2ModelConfig)


def own_fields(cls: type) -> list[dataclasses.Field]:
    """The fields in2 adds to (or redefines in) a TRL dataclass."""
    if not cls.__module__.startswith("in2."):
        return []
    return [f for f in dataclasses.fields(cls) if f.name in vars(cls).get("__annotations__", {})]


def config_flag(argv: list[str]) -> list[str]:
    """`--config=RECIPE` as `--config RECIPE`, the form TrlParser looks for."""
    return [a for arg in argv for a in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]


class TrainParser(OneLineErrors, TrlParser):
    """TrlParser with in2's one-line errors (a misspelt flag gets a close match), a short --help (usage,
    in2's fields with help, TRL's field names) and --help-all (every field, one line each)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("usage", USAGE)
        super().__init__(argument_classes(), description=DESCRIPTION, allow_abbrev=False, add_help=False, **kwargs)
        self.own_options = [
            self.add_argument("-h", "--help", action=_Help, help="show this help and exit"),
            self.add_argument("--help-all", action=_Help, help="show every field, TRL's too, one line each, and exit"),
            self.add_argument("--config", metavar="RECIPE", default=argparse.SUPPRESS, help="training recipe YAML"),
        ]

    def parse_args_and_config(self, args=None, **kwargs):
        """(script_args, training_args, model_args); an unknown flag exits naming it, an unknown recipe key
        raises ValueError (in2.train.sft names the file)."""
        args = config_flag(sys.argv[1:] if args is None else args)
        *outputs, from_config, from_cli = super().parse_args_and_config(
            args, return_remaining_strings=True, separate_remaining_strings=True
        )
        if from_cli:
            self.unknown(from_cli)
        if from_config:
            raise ValueError(f"unknown field(s): {' '.join(from_config[::2])}")
        return tuple(outputs[: len(self.dataclass_types)])  # not the namespace of in2.cli's defaults (func...)

    def format_help(self, every_field: bool = False) -> str:
        width = min(shutil.get_terminal_size().columns, 120) - 2
        wrap = textwrap.TextWrapper(width, initial_indent="  ", subsequent_indent="      ")
        out = [self.format_usage(), "\n".join(textwrap.wrap(DESCRIPTION, width)), ""]
        out += ["options:", *(wrap.fill(f"{', '.join(a.option_strings)}: {a.help}") for a in self.own_options), ""]
        for cls in argument_classes():
            hints = typing.get_type_hints(cls)
            mine = {f.name for f in own_fields(cls)}
            base = next(b for b in cls.__mro__ if b.__module__.startswith("trl"))
            if mine:
                out.append(f"in2's fields ({cls.__name__}):")
                out += [_line(wrap, f, hints[f.name], f.metadata.get("help", "")) for f in own_fields(cls)]
            rest = [f for f in dataclasses.fields(cls) if f.name not in mine and f.init]
            title = f"TRL's fields ({base.__name__}{', with transformers.TrainingArguments' * (base is SFTConfig)})"
            if every_field:
                out.append(f"{title}:")
                out += [_line(wrap, f, hints[f.name], first_sentence(f.metadata.get("help", ""))) for f in rest]
            else:
                out.append(textwrap.fill(f"{title}: " + ", ".join(f.name for f in rest), width, subsequent_indent="  "))
            out.append("")
        if not every_field:
            out.append("Run `in2 train --help-all` for every field with its type, default and help.")
        return "\n".join(out).rstrip() + "\n"


def _line(wrap: textwrap.TextWrapper, f: dataclasses.Field, tp, help_text: str) -> str:
    return wrap.fill(f"--{f.name} {type_name(tp).replace(' ', '')} (default: {show(default_of(f), 40)}): {help_text}")


class _Help(argparse.Action):
    def __init__(self, option_strings, dest, help=None):
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser._print_message(parser.format_help(every_field=option_string == "--help-all"), sys.stdout)
        parser.exit()


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> TrainParser:
    """`in2 train`'s parser, as TRL's scripts make theirs: added to `subparsers` (in2.cli's), else standalone
    (`python -m in2.train.sft`, benchmarks)."""
    if subparsers is not None:
        return subparsers.add_parser("train", help=HELP, parser_class=TrainParser)
    return TrainParser(prog=prog)
