"""Probes that fit the models: a probe of length L holds up to L - `probes.reserved_tokens` prompt tokens,
and a model then writes up to `generator.max_tokens` more; past the model's window (its config's
`max_position_embeddings`) the answer runs into positions it was never trained on, so such a recipe is
refused at `in2 probe build` and `in2 eval` time with the numbers. A served model (`openai` backend)
is not checked: its window is the server's to enforce."""

from __future__ import annotations

from pathlib import Path

from in2.assets import resolve
from in2.errors import ConfigError
from in2.gguf import stage_gguf
from in2.llm.config import GeneratorConfig


def model_window(generator: GeneratorConfig) -> int | None:
    """The positions a local model was built for (its config's max_position_embeddings); None for a served
    model or a config without that field."""
    if generator.backend != "transformers":
        return None
    from transformers import AutoConfig

    path, gguf = resolve(generator.model), generator.gguf_file
    if Path(path).is_file() and path.endswith(".gguf"):  # a GGUF file named directly
        path, gguf = str(Path(path).parent), Path(path).name
    try:  # a GGUF's config from the folder converted once (in2.gguf), not by parsing the whole file again
        config = AutoConfig.from_pretrained(str(stage_gguf(path, gguf)) if gguf else path)
    except (OSError, ValueError):
        return None  # not loadable here: loading the model will say why
    config = getattr(config, "text_config", config)
    window = getattr(config, "max_position_embeddings", None)
    return window if isinstance(window, int) and window > 0 else None


def check(cfg) -> None:
    """Raise ConfigError naming the first model and probe length whose prompt plus answer budget exceed
    that model's window (an EvalConfig; prebuilt probe folders are not checked: their lengths are FILM's)."""
    p = cfg.probes
    if p.prebuilt or "probing" not in cfg.suites:
        return
    longest = max(p.lengths)
    for i, m in enumerate(cfg.models):
        window = model_window(m.generator)
        if window is None:
            continue
        need = longest - p.reserved_tokens + m.generator.max_tokens
        if need > window:
            fits = window - m.generator.max_tokens + p.reserved_tokens
            raise ConfigError(
                f"probes.lengths: {longest} tokens - probes.reserved_tokens {p.reserved_tokens} + "
                f"models[{i}].generator.max_tokens {m.generator.max_tokens} = {need} tokens, more than the "
                f"{window}-token window of {m.name} ({m.generator.model}); use lengths up to {fits}, or set "
                f"probes.reserved_tokens to at least {longest - window + m.generator.max_tokens}"
            )
