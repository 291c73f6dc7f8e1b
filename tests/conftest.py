"""Offline test setup: HF libraries never reach the network; shared fixtures."""

import os

for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ[var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests.openai_server import CannedServer  # noqa: E402

MISTRAL = {
    "name_or_path": "pkg://mistral_common/data/tokenizer.model.v1",
    "gguf_file": None,
    "chat_template": "mistral-instruct",
}


@pytest.fixture(scope="session")
def mistral_tokenizer():
    from in2.config import TokenizerConfig
    from in2.tokenizer import load_tokenizer

    return load_tokenizer(TokenizerConfig(**MISTRAL))


@pytest.fixture
def server():
    with CannedServer() as s:
        yield s
