"""The tokenizer inside GGUF weights is converted once into a fast-tokenizer folder (parsing the GGUF took
~8 s in every command): the folder must tokenize and render chats exactly like the GGUF it came from. What
this catches: a conversion that drops special tokens, the BOS rule or the chat template."""

from pathlib import Path

from in2.assets import resolve
from in2.tokenizer import TokenizerConfig, fingerprint, load_tokenizer

TEXT = "Hello  world!\n\nThe quick brown fox: 中文, é, 123456 <|im_start|> def f(x): return x\t"
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Where is the key?"},
    {"role": "assistant", "content": "In the middle."},
]


def test_gguf_tokenizer_is_converted_once_and_tokenizes_like_the_gguf(monkeypatch):
    from transformers import AutoTokenizer

    cfg = TokenizerConfig()  # SmolLM2-135M-Instruct's GGUF, the offline default
    assert cfg.gguf_file
    staged = load_tokenizer(cfg)
    direct = AutoTokenizer.from_pretrained(resolve(cfg.name_or_path), gguf_file=cfg.gguf_file)
    direct.pad_token = direct.pad_token or direct.unk_token or direct.eos_token

    folder = Path(staged.name_or_path)
    assert folder.name.startswith("gguf-") and (folder / "tokenizer.json").is_file()  # not the GGUF itself
    real = AutoTokenizer.from_pretrained

    def no_gguf(*args, **kwargs):
        assert not kwargs.get("gguf_file"), "the GGUF was parsed again"
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", no_gguf)
    assert Path(load_tokenizer(cfg).name_or_path) == folder  # once: a second load reads the folder, not the GGUF
    assert fingerprint(staged) == fingerprint(direct)
    assert staged(TEXT).input_ids == direct(TEXT).input_ids
    assert staged.apply_chat_template(CHAT, tokenize=False) == direct.apply_chat_template(CHAT, tokenize=False)
    assert (staged.bos_token, staged.eos_token, staged.pad_token) == (
        direct.bos_token,
        direct.eos_token,
        direct.pad_token,
    )
