"""The files RULER's tasks read (lm-eval's `ruler` tasks), fetched once by in2, pinned by sha256 and handed to lm-eval.

lm-eval fetches them itself, unpinned: the essay-haystack NIAH tasks load the Hub dataset
baber/paul_graham_essays at its latest revision and split it into sentences with NLTK's `punkt_tab`, which it
downloads at import; the QA tasks download SQuAD v2's dev set and a HotpotQA dev file on every run. in2 instead:

- downloads each file the run's tasks need from `ruler.data.<name>_url` (a revision in the URL) into
  ~/.cache/in2/ruler/ once, and checks its sha256 against `ruler.data.<name>_sha256` on every run; an unset
  digest is recorded at the first download and checked from then on;
- hands them to lm-eval in-process: `punkt_tab` unpacked into an NLTK data folder put first on NLTK's path, the
  essays as lm-eval's cached haystack, the QA files as the answers to lm-eval's own requests for their URLs;
- for a run of only offline tasks (noise haystacks, variable tracking, word extraction), keeps lm-eval's import
  from trying to download `punkt_tab`, which those tasks never use.
"""

from __future__ import annotations

import hashlib
import inspect
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from in2 import redact
from in2.errors import ConfigError
from in2.evaluation.download import fetch_checked
from in2.files import partial_path, publish_once
from in2.recipes import option

ESSAY_TASKS = ("niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multiquery", "niah_multivalue")
"""RULER tasks whose haystack is Paul Graham's essays, split into sentences with NLTK's punkt_tab."""

NEEDS = {
    **{t: ("essays", "punkt_tab") for t in ESSAY_TASKS},
    "ruler_qa_squad": ("squad",),
    "ruler_qa_hotpot": ("hotpotqa",),
}
"""RULER task -> the files of `RulerDataConfig` it reads."""

ESSAYS_DATASET = "baber/paul_graham_essays"
"""The Hub dataset lm-eval's essay haystack loads (its `train` split, `text` column)."""


FILES = ("essays", "punkt_tab", "squad", "hotpotqa")
"""The files of `RulerDataConfig`: each has `<name>_url` and `<name>_sha256`."""


@dataclass
class RulerDataConfig:
    """The files RULER's essay-haystack NIAH and QA tasks read: where each is downloaded from (a revision in the
    URL) and the sha256 it must have (None: the first download's, recorded and checked from then on). The
    digests are published pins of these files; they were not downloaded here (in2 was built without network),
    so the first download is what checks them."""

    essays_url: str = option(
        "https://huggingface.co/datasets/baber/paul_graham_essays/resolve/"
        "792d672b77d1a67720f7e9820d646358fc18792e/essays.parquet",
        f"The essay haystack: the parquet file of the Hub dataset {ESSAYS_DATASET} (what lm-eval reads), at a commit.",
    )
    essays_sha256: str | None = option(
        "825448033be010042ffd6fc77c32bbcab61f2ef63196f0fc4bfbf5b388a1660e", "Its sha256 (a published pin)."
    )
    punkt_tab_url: str = option(
        "https://raw.githubusercontent.com/nltk/nltk_data/"
        "550b6625bcef1f2abff2ff770a5a0d272c9c6b2a/packages/tokenizers/punkt_tab.zip",
        "NLTK's punkt_tab sentence splitter (a zip of nltk_data at a commit), for the essay haystack.",
    )
    punkt_tab_sha256: str | None = option(
        "e57f64187974277726a3417ca6f181ec5403676c717672eef6a748a7b20e0106", "Its sha256 (a published pin)."
    )
    squad_url: str = option(
        "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v2.0.json", "SQuAD v2's dev set (ruler_qa_squad)."
    )
    squad_sha256: str | None = option(
        "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8", "Its sha256 (a published pin)."
    )
    hotpotqa_url: str = option(
        "https://huggingface.co/datasets/namlh2004/hotpotqa/resolve/"
        "7e54db4656209750ff487f6fdf8e39a66dba136b/hotpot_dev_distractor_v1.json",
        "HotpotQA's dev distractor set (ruler_qa_hotpot), at the Hub commit lm-eval reads.",
    )
    hotpotqa_sha256: str | None = option(
        None, "No published digest: the first download's is recorded beside it and checked from then on."
    )


def needed(tasks: list[str]) -> list[str]:
    """The files of `RulerDataConfig` that `tasks` read, in a fixed order."""
    names = {n for t in tasks for n in NEEDS.get(t, ())}
    return [n for n in FILES if n in names]


def cache_root() -> Path:
    return Path.home() / ".cache" / "in2" / "ruler"


def fetch_all(data: RulerDataConfig, tasks: list[str]) -> dict[str, dict]:
    """{name: {"path", "url", "sha256", "pinned"}} for every file `tasks` read: downloaded once, checked on every
    call (in2.evaluation.download.fetch_checked)."""
    out = {}
    for name in needed(tasks):
        url, sha256 = getattr(data, f"{name}_url"), getattr(data, f"{name}_sha256")
        field = f"ruler.data.{name}"
        if not url:
            readers = [t for t in tasks if name in NEEDS.get(t, ())]
            raise ConfigError(f"{field}_url: empty; RULER's tasks {readers} read this file")
        key = sha256 or hashlib.sha256(url.encode()).hexdigest()
        path = cache_root() / name / key[:16] / Path(url.split("?")[0]).name
        hint = "run once where the URL can be reached (the file is kept in ~/.cache/in2/ruler), or leave out the tasks that read it"
        try:
            digest = fetch_checked(url, path, f"{field}_url", f"RULER's {name} file", hint, sha256, f"{field}_sha256")
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
        out[name] = {"path": str(path), "url": redact.userinfo(url)[0], "sha256": digest, "pinned": sha256 is not None}
    return out


def nltk_folder(files: dict[str, dict]) -> Path:
    """An NLTK data folder for this run: the checked punkt_tab unpacked (once per digest); without it, a folder
    that only keeps lm-eval's import from downloading punkt_tab (the offline tasks do not split sentences)."""
    if "punkt_tab" not in files:
        folder = cache_root() / "nltk-none"
        (folder / "tokenizers" / "punkt_tab").mkdir(parents=True, exist_ok=True)
        return folder
    punkt = files["punkt_tab"]
    folder = cache_root() / "nltk" / punkt["sha256"][:16]
    target = folder / "tokenizers" / "punkt_tab"
    if not target.is_dir():
        partial = partial_path(folder / "tokenizers" / "unpack")
        with zipfile.ZipFile(punkt["path"]) as z:
            names = z.namelist()
            if not names or any(
                n.startswith("/") or ".." in n.split("/") or not n.startswith("punkt_tab/") for n in names
            ):
                raise ConfigError(
                    f"ruler.data.punkt_tab: {punkt['path']} is not NLTK's punkt_tab zip (unexpected entries)"
                )
            z.extractall(partial)
        publish_once(partial / "punkt_tab", target)
        _rmtree(partial)
    return folder


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def lm_eval_reads(files: dict[str, dict]):
    """While lm-eval runs inside this block, its RULER tasks read `files` (from `fetch_all`) and nothing else:
    NLTK finds the checked punkt_tab first, the essay haystack is the checked parquet file, and lm-eval's GETs of
    the QA files' URLs are answered from the checked copies (any other URL goes out as usual)."""
    import nltk

    folder = str(nltk_folder(files))
    nltk.data.path.insert(0, folder)
    try:
        if "essays" in files:  # (importing prepare_niah looks for punkt_tab, and takes ~12 s: only when needed)
            from lm_eval.tasks.ruler import prepare_niah

            _seed_essays(prepare_niah, Path(files["essays"]["path"]))
        urls = {}
        if {"squad", "hotpotqa"} & set(files):
            from lm_eval.tasks.ruler import qa_utils

            for name, reader in (("squad", qa_utils.read_squad), ("hotpotqa", qa_utils.read_hotpotqa)):
                if name in files:
                    urls[inspect.signature(reader).parameters["url"].default] = Path(files[name]["path"])
        with _answering(urls):
            yield
    finally:
        nltk.data.path.remove(folder)


def _seed_essays(prepare_niah, path: Path) -> None:
    """Fill lm-eval's cached `get_haystack("essay")` from `path`: its one call of `datasets.load_dataset` for
    the essays reads the checked parquet file instead of the Hub."""
    import datasets
    import pyarrow.parquet as pq

    class _Pinned:
        @staticmethod
        def load_dataset(name, split=None, **kwargs):
            if name != ESSAYS_DATASET or split != "train" or kwargs:
                raise RuntimeError(f"lm-eval asked for {name!r} split {split!r}; in2 pins only {ESSAYS_DATASET} train")
            return datasets.Dataset(pq.read_table(path))

    prepare_niah.get_haystack.cache_clear()
    real = prepare_niah.datasets
    prepare_niah.datasets = _Pinned
    try:
        # functools.cache keys a keyword call apart from a positional one: fill both (lm-eval uses the keyword)
        haystack = prepare_niah.get_haystack(type_haystack="essay")
        prepare_niah.get_haystack("essay")
    finally:
        prepare_niah.datasets = real
    if not haystack or not isinstance(haystack, list):
        raise ConfigError(f"ruler.data.essays: {path} gave an empty essay haystack")


@contextmanager
def _answering(urls: dict[str, Path]):
    """`requests.get` of one of `urls` answers with that file's bytes (lm-eval's QA readers call it)."""
    import requests

    if not urls:
        yield
        return
    real = requests.get

    def get(url, *args, **kwargs):
        if url not in urls:
            return real(url, *args, **kwargs)
        response = requests.Response()
        response.status_code, response.url = 200, url
        response._content = urls[url].read_bytes()
        return response

    requests.get = get
    try:
        yield
    finally:
        requests.get = real
