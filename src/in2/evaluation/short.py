"""The short-task guard: IN2 training must not cost short-context skills (the FILM paper's Section 4, arXiv 2404.16811).

Runs lm-evaluation-harness through its Python API (`pip install -e ".[short]"`): a local model via
its `hf` backend, an OpenAI-compatible server via `local-completions` (loglikelihood tasks need a
server that returns prompt logprobs, e.g. vLLM). Reports each task's metric and the change against
the base model.
"""

from __future__ import annotations

import base64
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from in2 import redact
from in2.assets import resolve
from in2.errors import ConfigError
from in2.evaluation.config import EvalConfig
from in2.gguf import stage_gguf
from in2.llm.base import backend_class
from in2.llm.config import GeneratorConfig
from in2.llm.weights import compute_dtype


def lm_eval_model(generator: GeneratorConfig) -> tuple[str, dict]:
    """(lm-eval model type, model arguments) for a generator section. A login in `base_url` goes into
    an Authorization header, never into the URL that lm-eval logs; the key is handed over in
    OPENAI_API_KEY (see `_api_key`), never as an argument."""
    if backend_class(generator.backend).local:
        if generator.gguf_file:  # lm-eval loads the folder in2 converts a GGUF file into once, in float32
            folder = stage_gguf(resolve(generator.model), generator.gguf_file)
            return "hf", {"pretrained": str(folder), "dtype": compute_dtype(generator)}
        return "hf", {"pretrained": resolve(generator.model), "dtype": generator.dtype}
    if not generator.base_url:
        raise ConfigError("short: an openai-backend model needs generator.base_url (an OpenAI-compatible server)")
    base, login = redact.userinfo(generator.base_url)
    p = urlsplit(base)
    url = urlunsplit((p.scheme, p.netloc, p.path.rstrip("/") + "/completions", p.query, p.fragment))
    args = {"model": generator.model, "base_url": url, "num_concurrent": generator.concurrency}
    if login:  # as the openai client does with a URL login: HTTP basic auth
        args["header"] = {"Authorization": "Basic " + base64.b64encode(login.encode()).decode()}
    return "local-completions", args


@contextmanager
def _api_key(generator: GeneratorConfig):
    """lm-eval's API models read their key from OPENAI_API_KEY: lend them in2's `api_key_env`."""
    key = None if backend_class(generator.backend).local else os.environ.get(generator.api_key_env)
    before = os.environ.get("OPENAI_API_KEY")
    if key:
        os.environ["OPENAI_API_KEY"] = key
    try:
        yield
    finally:
        if key and before is None:
            del os.environ["OPENAI_API_KEY"]
        elif key:
            os.environ["OPENAI_API_KEY"] = before


def model_id(generator: GeneratorConfig) -> str:
    """The answering model as the request cache names it (its weights' fingerprint for a local folder)."""
    from in2.llm import Engine

    engine = Engine(generator)
    try:
        return engine.model_id
    finally:
        engine.close()


def request_cache(folder: str | Path, suite: str, model: str) -> str:
    """lm-eval's request cache (`use_cache`) for `suite` and the answering `model` (`model_id`): lm-eval keeps
    each answer as it comes, so a run stopped inside a suite asks only what is left; a retrained checkpoint gets
    a cache of its own."""
    return str(Path(folder) / "lm-eval-cache" / f"{suite}-{hashlib.sha256(model.encode()).hexdigest()[:16]}")


def run(
    cfg: EvalConfig, generator: GeneratorConfig, out_dir: str | Path, datasets: dict | None = None
) -> dict[str, float]:
    """{task: metric in percent} for one model, its answers kept in `out_dir` (`request_cache`); `datasets`, when
    given, gets each task's dataset (path, name, revision) as lm-eval ran it."""
    try:
        import lm_eval
    except ImportError:
        raise ConfigError('suites: "short" needs lm-evaluation-harness: pip install -e ".[short]"') from None
    import torch
    from lm_eval.tasks import TaskManager

    model, model_args = lm_eval_model(generator)
    manager = TaskManager(include_path=cfg.short.include_path)
    cache = request_cache(out_dir, "short", model_id(generator))
    scores = {}
    with _api_key(generator):
        for shot, tasks in _by_fewshot(cfg).items():
            out = lm_eval.simple_evaluate(
                model=model,
                model_args=model_args,
                tasks=[t.name for t in tasks],
                num_fewshot=shot,
                batch_size=cfg.short.batch_size,
                limit=cfg.short.limit,
                device="cuda" if torch.cuda.is_available() else "cpu",
                task_manager=manager,
                use_cache=cache,
            )
            scores.update(extract(out, tasks))
            if datasets is not None:
                datasets.update(dataset_of(out, tasks))
    return scores


def dataset_of(lm_eval_output: dict, tasks: list) -> dict[str, dict]:
    """{task: {path, name, revision}} of the datasets lm-eval read (its task configs)."""
    configs = lm_eval_output.get("configs", {})
    out = {}
    for t in tasks:
        c = configs.get(t.name, {})
        kwargs = c.get("dataset_kwargs") or {}
        out[t.name] = {"path": c.get("dataset_path"), "name": c.get("dataset_name"), "revision": kwargs.get("revision")}
    return out


def _by_fewshot(cfg: EvalConfig) -> dict[int, list]:
    groups: dict[int, list] = {}
    for t in cfg.short.tasks:
        groups.setdefault(t.num_fewshot, []).append(t)
    return groups


def extract(lm_eval_output: dict, tasks: list) -> dict[str, float]:
    """Each task's configured metric (percent) from an lm-eval `simple_evaluate` result."""
    results = lm_eval_output.get("results", {})
    out = {}
    for t in tasks:
        if t.name not in results or t.metric not in results[t.name]:
            known = sorted(results.get(t.name, {}))
            raise ValueError(f"short: lm-eval gave no {t.metric!r} for {t.name} (it has {known})")
        out[t.name] = 100 * float(results[t.name][t.metric])
    return out


def deltas(scores: dict[str, dict[str, float]], base: str | None) -> dict[str, dict[str, float]]:
    """Per model and task, the change against the base model (empty without a base)."""
    if base is None or base not in scores:
        return {}
    return {
        model: {task: value - scores[base][task] for task, value in per.items() if task in scores[base]}
        for model, per in scores.items()
        if model != base
    }
