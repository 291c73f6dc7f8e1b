"""A local transformers model with batched generation (the offline default)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from tqdm.auto import tqdm

from in2.assets import loading, resolve
from in2.gguf import stage_gguf
from in2.llm.base import Request, Response
from in2.llm.cache import Cache
from in2.llm.config import GeneratorConfig
from in2.llm.weights import compute_dtype, fingerprint

logger = logging.getLogger(__name__)


def _stop_after_text(tok, start: int, stops: list[str]):
    """Stop each sequence once its new text, leading whitespace ignored, contains a stop string."""
    import torch
    from transformers import StoppingCriteria

    class StopAfterText(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tok.batch_decode(input_ids[:, start:], skip_special_tokens=True)
            return torch.tensor([any(s in t.lstrip() for s in stops) for t in texts], device=input_ids.device)

    return StopAfterText()


def _reply_repetition_penalty(penalty: float, start: int):
    """transformers' repetition penalty over the reply's tokens only. Its own processor also penalizes
    every prompt token, which steers a grounded answer away from the very words of its passage."""
    import torch
    from transformers import LogitsProcessor

    class ReplyRepetitionPenalty(LogitsProcessor):
        def __call__(self, input_ids, scores):
            reply = input_ids[:, start:]
            if reply.shape[1] == 0:
                return scores
            seen = torch.gather(scores, 1, reply)
            seen = torch.where(seen < 0, seen * penalty, seen / penalty)
            return scores.scatter(1, reply, seen)

    return ReplyRepetitionPenalty()


class LocalBackend:
    """Runs on the GPU where CUDA is available, else on the CPU. Stop strings count only after some
    non-whitespace text: a reply that opens with a newline continues to its first line of content
    (small models often start an answer on a new line)."""

    local = True
    sampling_fields = ("repetition_penalty",)

    @classmethod
    def slots(cls, cfg: GeneratorConfig) -> int:
        return cfg.batch_size

    @classmethod
    def model_id(cls, cfg: GeneratorConfig, cache: Cache) -> str:
        """A hash of the weights and the dtype they run in (in2.llm.weights)."""
        return fingerprint(cfg, cache)

    def __init__(self, cfg: GeneratorConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        path = resolve(cfg.model)
        dtype = compute_dtype(cfg)
        if dtype != cfg.dtype:
            logger.info(
                "generator.dtype: %s asked for; the GGUF weights %s load in float32 (see in2.llm.weights.compute_dtype)",
                cfg.dtype,
                cfg.gguf_file,
            )
        with loading("generator.model", repr(cfg.model)):
            if cfg.gguf_file:  # the folder converted once (in2.gguf): the same weights, loaded in a second
                path = str(stage_gguf(path, cfg.gguf_file))
            self.tok = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
        self.model.to("cuda" if torch.cuda.is_available() else "cpu")
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.torch = torch

    def _texts(self, requests: list[Request]) -> list[str]:
        return [
            r.raw
            if r.raw is not None
            else self.tok.apply_chat_template(r.as_messages(), add_generation_prompt=True, tokenize=False) + r.prefix
            for r in requests
        ]

    def batches(self, requests: list[Request], texts: list[str]) -> list[list[int]]:
        """Indices per generate() call: same stop strings, prompt kind and token limit, similar lengths,
        at most batch_size."""
        groups: dict[tuple, list[int]] = {}
        for i in sorted(range(len(requests)), key=lambda i: len(texts[i])):
            groups.setdefault((requests[i].stop, requests[i].raw is not None, requests[i].max_tokens), []).append(i)
        bs = self.cfg.batch_size
        return [g[k : k + bs] for g in groups.values() for k in range(0, len(g), bs)]

    def run(self, requests: list[Request], sampling: dict, done: Callable[[int, Response], None], desc: str) -> None:
        torch = self.torch
        texts = self._texts(requests)
        gen_kwargs = {"max_new_tokens": sampling["max_tokens"], "pad_token_id": self.tok.pad_token_id}
        if sampling["temperature"] > 0:
            gen_kwargs.update(do_sample=True, temperature=sampling["temperature"], top_p=sampling["top_p"])
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with tqdm(total=len(requests), desc=desc, unit="req") as bar:
            for idx in self.batches(requests, texts):
                stop = list(requests[idx[0]].stop)
                limit = requests[idx[0]].max_tokens or sampling["max_tokens"]
                raw = requests[idx[0]].raw is not None  # chat templates carry their own special tokens
                enc = self.tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=raw)
                enc = enc.to(self.model.device)
                width = enc["input_ids"].shape[1]
                extra = {"stopping_criteria": [_stop_after_text(self.tok, width, stop)]} if stop else {}
                if sampling.get("repetition_penalty") is not None:
                    extra["logits_processor"] = [_reply_repetition_penalty(sampling["repetition_penalty"], width)]
                with torch.no_grad():
                    out = self.model.generate(**enc, **{**gen_kwargs, "max_new_tokens": limit}, **extra)
                new = out[:, enc["input_ids"].shape[1] :]
                for row, i in enumerate(idx):
                    ids = new[row]
                    n = int((ids != self.tok.pad_token_id).sum())
                    text = self.tok.decode(ids, skip_special_tokens=True)
                    if stop:
                        text = text.lstrip()
                    cut = min((text.find(s) for s in stop if s in text), default=-1)
                    eos = bool((ids == self.tok.eos_token_id).any())
                    stopped = cut >= 0 or eos or n < limit
                    done(
                        i,
                        Response(
                            text=text[:cut] if cut >= 0 else text,
                            finish_reason="stop" if stopped else "length",
                            prompt_tokens=int(enc["attention_mask"][row].sum()),
                            completion_tokens=n,
                        ),
                    )
                bar.update(len(idx))
