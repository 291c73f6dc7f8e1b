"""Offline test setup: HF libraries never reach the network; shared fixtures."""

import json
import os
import random
from pathlib import Path

for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ[var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):  # make test: a worker per core
    # torch's threads divided between the workers (and the processes tests start, which inherit it): 2
    # workers of 2 threads on 2 cores ran the local-backend generation 4-5x slower than 1 thread each
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from in2.prompts import film_user  # noqa: E402
from tests.openai_server import CannedServer  # noqa: E402

MISTRAL = {
    "name_or_path": "pkg://mistral_common/data/tokenizer.model.v1",
    "gguf_file": None,
    "chat_template": "mistral-instruct",
}

TEKKEN = {  # Mistral-Nemo-Instruct-2407's tokenizer (128K window)
    "name_or_path": "pkg://mistral_common/data/tekken_240718.json",
    "gguf_file": None,
    "chat_template": "mistral-tekken",
}


@pytest.fixture(scope="session")
def mistral_tokenizer():
    from in2.tokenizer import TokenizerConfig, load_tokenizer

    return load_tokenizer(TokenizerConfig(**MISTRAL))


@pytest.fixture(scope="session")
def tekken_tokenizer():
    from in2.tokenizer import TokenizerConfig, load_tokenizer

    return load_tokenizer(TokenizerConfig(**TEKKEN))


@pytest.fixture(scope="session")
def stdlib_corpus(tmp_path_factory) -> Path:
    """An offline corpus big enough for 128K-token contexts: the Python standard library's own modules as
    .txt files (about 1.5 MB, 0.4M tokens; the pydoc corpus has 0.1M)."""
    return write_stdlib_corpus(tmp_path_factory.mktemp("stdlib-corpus"))


def write_stdlib_corpus(folder: Path, max_bytes: int = 1_500_000) -> Path:
    import sysconfig

    total = 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        (folder / f"{path.stem}.txt").write_text(text)
        total += len(text)
        if total >= max_bytes:
            break
    return folder


@pytest.fixture
def server():
    with CannedServer() as s:
        yield s


@pytest.fixture
def file_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving the folder `served` (returned with the base URL and the
    list of paths asked for)."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            asked.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}/", asked
    finally:
        httpd.shutdown()
        httpd.server_close()


WORDS = "river stone lamp orchid copper violin harbor maple signal quartz meadow ember".split()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, mistral_tokenizer):
    """A 2-layer Mistral with the real Mistral tokenizer and the FILM chat template, saved as a model folder."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-mistral")
    model = tiny_mistral(len(mistral_tokenizer), hidden_size=32, layers=2, heads=4, kv_heads=2)
    model.save_pretrained(folder)
    mistral_tokenizer.save_pretrained(folder)
    return folder


def tiny_mistral(vocab_size: int, hidden_size: int = 16, layers: int = 1, heads: int = 2, kv_heads: int = 1):
    """A randomly initialised Mistral small enough for CPU tests (MLP twice the hidden size, no sliding window)."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        sliding_window=None,
    )
    return MistralForCausalLM(config)


def _row(rng: random.Random, i: int) -> dict:
    key = f"The code word of locker {i} is {rng.choice(WORDS)}-{i}."
    filler = [" ".join(rng.choices(WORDS, k=12)) + "." for _ in range(rng.randint(2, 12))]
    filler.insert(rng.randint(0, len(filler)), key)
    question = f"What is the code word of locker {i}?"
    answer = f"Locker {i} uses {key.split(' is ')[1].rstrip('.')} as its code word."
    return {
        "id": f"row-{i}",
        "type": "fine_grained",
        "prompt": [{"role": "user", "content": film_user("\n".join(filler), question)}],
        "completion": [{"role": "assistant", "content": answer}],
    }


@pytest.fixture(scope="session")
def dataset_folder(tmp_path_factory):
    """An in2-shaped dataset folder: prompt-completion rows in data/<split>-*.parquet."""
    from datasets import Dataset

    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("in2-tiny")
    (folder / "data").mkdir()
    Dataset.from_list([_row(rng, i) for i in range(8)]).to_parquet(folder / "data" / "train-00000-of-00001.parquet")
    Dataset.from_list([_row(rng, i) for i in range(8, 10)]).to_parquet(
        folder / "data" / "validation-00000-of-00001.parquet"
    )
    (folder / "manifest.json").write_text(json.dumps({"content_hash": "feedc0ffee"}))
    return folder


def write_recipe(tmp_path, tiny_model, dataset_folder, **fields) -> Path:
    recipe = {
        "model_name_or_path": str(tiny_model),
        "base_model_id": "in2-tests/tiny-mistral",
        "attn_implementation": "sdpa",
        "dtype": "float32",
        "license": "apache-2.0",
        "dataset_name": str(dataset_folder),
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3,
        "max_steps": 2,
        "max_length": 1024,
        "bf16": False,
        "use_cpu": True,
        "activation_checkpointing": False,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 1,
        "eval_strategy": "no",
        "report_to": "none",
        "seed": 0,
        **fields,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def local_generator(name: str, model: Path, cache: Path, **fields) -> dict:
    """An evaluation model entry for the transformers (local) backend, greedy."""
    generator = {"backend": "transformers", "model": str(model), "gguf_file": None, "temperature": 0.0}
    return {"name": name, "generator": {**generator, "cache_dir": str(cache), **fields}}
