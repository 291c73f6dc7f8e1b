"""The command line's shared parts: every recipe field is an option `--<dotted path> VALUE` (the value is read
as YAML by the recipe loader), `--help` lists the fields by section with type, default and help from the
dataclass metadata, and a mistake is one line naming the option, with a close match for a misspelt one."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from typing import Any, NoReturn

import yaml

from in2.recipes import did_you_mean, recipe_fields

FIELD_USAGE = "[--section.field VALUE ...]"


def type_name(tp: Any) -> str:
    """`int`, `str | None`, `list[int]`, `mapping`: a field's type as a reader of the recipe sees it."""
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "None"
    if origin is list:
        return f"list[{', '.join(map(type_name, typing.get_args(tp)))}]"
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return "mapping"
    if typing.get_args(tp):  # unions
        return " | ".join(dict.fromkeys(type_name(a) for a in typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def show(value: Any, width: int = 60) -> str:
    """A default as it is written in a recipe (YAML flow style), cut at `width` characters."""
    if dataclasses.is_dataclass(value) or (isinstance(value, list) and value and dataclasses.is_dataclass(value[0])):
        value = [dataclasses.asdict(v) for v in value] if isinstance(value, list) else dataclasses.asdict(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()
    return text if len(text) <= width else text[: width - 3] + "..."


def default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = re.search(r"(?<!e\.g)(?<!i\.e)\.(\s|$)", text)
    return text[: end.start() + 1] if end else text


class OneLineErrors:
    """argparse errors as one line, `prog: error: --option: what is wrong` (no usage dump); unknown options
    get the command's usage line and a close match among its options."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument ([^/: ]+)(?:/\S+)*: ", r"\1: ", message)
        message = re.sub(r"(invalid \S+ value): '", r"\1 '", message)
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if choice:  # `in2 trian`: name the close one
            choices = re.findall(r"'([^']*)'", choice[2])
            message = f"{message[: choice.start()]}invalid choice {did_you_mean(choice[1], choices)}"
        self.exit(2, f"{self.prog}: error: {message}\n")

    def unknown(self, extras: list[str]) -> NoReturn:
        """Exit naming the arguments this command does not take (after `parse_known_args`)."""
        known = [o for action in self._actions for o in action.option_strings]
        flags = [a.split("=", 1)[0] for a in extras if a.startswith("-")]
        what = "unknown option " + ", ".join(did_you_mean(f, known) for f in flags) if flags else None
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {what or 'unrecognized arguments: ' + ' '.join(extras)}\n")


class Parser(OneLineErrors, argparse.ArgumentParser):
    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)


def subparser(parser_class: type[argparse.ArgumentParser] | None = None, **kwargs) -> argparse.ArgumentParser:
    """`add_subparsers(parser_class=subparser)`: `add_parser(name, parser_class=X)` may then choose the
    command's parser class (in2 train's is a TrlParser, as in TRL's own `make_parser(subparsers)`)."""
    return (parser_class or Parser)(**kwargs)


class _Field(argparse.Action):
    """Collects `path=VALUE` in command-line order into `namespace.fields`, for recipes.load_config."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.fields = [*namespace.fields, f"{self.dest}={values}"]


def add_recipe_fields(parser: argparse.ArgumentParser, cls: type, aliases: dict[str, list[str]] | None = None) -> None:
    """One option `--<dotted path> VALUE` per field of recipe `cls`, in one help group per section."""
    parser.set_defaults(fields=())
    groups: dict[str, Any] = {}
    for path, f, tp, section in recipe_fields(cls):
        name = path.rpartition(".")[0] or "top level"
        if name not in groups:
            about = section.__doc__ if section is not cls else None
            groups[name] = parser.add_argument_group(f"recipe fields: {name}", about)
        help_text = f.metadata.get("help", "")
        groups[name].add_argument(
            f"--{path}",
            *(aliases or {}).get(path, []),
            dest=path,
            action=_Field,
            metavar=type_name(tp).replace(" ", ""),
            help=f"{help_text} (default: {show(default_of(f))})".replace("%", "%%"),
        )
