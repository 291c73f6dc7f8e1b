"""Batch generation: requests written as batch JSONL files, answered offline, outputs read back.

`openai_batch`: OpenAI's Batch API (or any server with its `/v1/files` and `/v1/batches` endpoints):
the files are uploaded, submitted, polled until done, and their output and error files downloaded.
`batch_files`: the files are only written; `vllm run-batch -i IN -o OUT --model M` (or anything that
writes the same output format) answers them, and the same command run again reads the outputs.

Every batch keeps a small state file in `<generator.cache_dir>/batches/`, replaced atomically and
fsync'd at each step: written -> uploaded (file id) -> submitted (batch id) -> terminal -> downloaded.
A batch's id is on disk before anything else is done after its submission; a run killed between the
submission and that write finds its batch again by the input file id on the server. A rerun drives the
batches that hold any request it still needs and never resubmits a request a live or finished batch
holds: a request is sent again only after a batch ended without answering it (failed, expired or
cancelled batch; an error line), at most `generator.batch_attempts` times in all; then it is a failed
request. Requests are named by a hash of their body (`custom_id`), so the names are the same in every
run. Answers go to the engine, which puts them into the answer cache as the synchronous backend does.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from in2 import redact
from in2.errors import ConfigError
from in2.llm.base import BatchPending, FatalRequestError, Request, Response, backend_class
from in2.llm.cache import Cache, one_run
from in2.llm.config import GeneratorConfig
from in2.llm.openai_backend import OpenAIBackend

TERMINAL = ("completed", "failed", "expired", "cancelled")
REFUSED = (400, 413, 422)
"""Line status codes that depend on the request itself: not sent again (in2.synth.qa.REFUSED_AS_ASKED)."""
ENDPOINTS = {"chat": "/v1/chat/completions", "text": "/v1/completions"}
LINE_OVERHEAD = 100
"""Bytes a request line adds to its body (custom_id, method, url), for splitting files by size."""


def batch_dir(cfg: GeneratorConfig) -> Path:
    return Path(cfg.cache_dir) / "batches"


def body(request: Request, sampling: dict, model: str) -> dict:
    """The request as the synchronous backend sends it (in2.llm.openai_backend)."""
    b: dict = {
        "model": model,
        "temperature": sampling["temperature"],
        "top_p": sampling["top_p"],
        "max_tokens": request.max_tokens or sampling["max_tokens"],
    }
    if request.stop:
        b["stop"] = list(request.stop)
    if request.raw is not None:
        b["prompt"] = request.raw
        return b
    messages = request.as_messages()
    if request.prefix:  # vLLM-style prefill: the assistant turn continues from the prefix
        messages.append({"role": "assistant", "content": request.prefix})
        b.update(continue_final_message=True, add_generation_prompt=False)
    b["messages"] = messages
    return b


def custom_id(line_body: dict) -> str:
    return hashlib.sha256(json.dumps(line_body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, fsync'd (file and folder): a kill leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Batch:
    """One batch's files and state in the batch folder (module docstring)."""

    def __init__(self, folder: Path, name: str):
        self.folder, self.name = folder, name
        self.state_path = folder / f"{name}.json"
        self.input = folder / f"{name}.input.jsonl"
        self.ids = folder / f"{name}.ids"
        self.output = folder / f"{name}.output.jsonl"
        self.errors = folder / f"{name}.errors.jsonl"
        self.state: dict = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    def save(self, **changes) -> None:
        self.state.update(changes)
        write_atomic(self.state_path, json.dumps(self.state, indent=1).encode())

    @property
    def status(self) -> str:
        return self.state.get("status", "written")

    def held(self) -> np.ndarray:
        """The custom_ids of its requests (32 bytes each)."""
        return np.fromfile(self.ids, dtype="S32")

    def results(self) -> Iterator[tuple[str, Response]]:
        """(custom_id, response or error) of every line of its output and error files."""
        for path in (self.output, self.errors):
            if not path.exists():
                continue
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        yield parse_line(json.loads(line))
                    except ValueError:  # a blank or cut-off line (a writer killed mid-line): no answer
                        continue


def parse_line(line: dict) -> tuple[str, Response]:
    """One line of a batch output or error file (OpenAI's format, also vLLM run-batch's)."""
    cid = line.get("custom_id", "")
    resp = line.get("response") or {}
    status = resp.get("status_code")
    err = line.get("error")
    if err or status != 200:
        code = f"http_{status}" if status and status != 200 else f"batch_{(err or {}).get('code') or 'error'}"
        message = ((resp.get("body") or {}).get("error") or err or {}).get("message")
        return cid, Response(text=None, error=code, detail=redact.text(str(message)[:200]) if message else None)
    b = resp.get("body") or {}
    choices = b.get("choices") or []
    if not choices:
        return cid, Response(text=None, error="invalid_response")
    choice, usage = choices[0], b.get("usage") or {}
    text = choice["text"] if "text" in choice else (choice.get("message") or {}).get("content")
    return cid, Response(
        text=text or "",
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens", 0) or 0,
        completion_tokens=usage.get("completion_tokens", 0) or 0,
    )


class _Writer:
    """One batch's request file and ids, streamed to temporary files, named and saved by `close`."""

    def __init__(self, folder: Path, url: str):
        self.folder, self.url = folder, url
        self.requests = self.bytes = 0
        self.hash = hashlib.sha256()
        self.tmp = folder / f".writing-{os.getpid()}.input.jsonl"
        self.tmp_ids = folder / f".writing-{os.getpid()}.ids"
        self.f, self.f_ids = open(self.tmp, "wb"), open(self.tmp_ids, "wb")

    def add(self, cid: str, line: bytes) -> None:
        self.f.write(line)
        self.f_ids.write(cid.encode())
        self.hash.update(line)
        self.requests += 1
        self.bytes += len(line)

    def close(self) -> Batch:
        """Files fsync'd and renamed, then the state file that makes the batch known (status `written`)."""
        for f in (self.f, self.f_ids):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        name = f"{time.time_ns()}-{self.hash.hexdigest()[:12]}"  # sorts in the order written
        b = Batch(self.folder, name)
        os.replace(self.tmp, b.input)
        os.replace(self.tmp_ids, b.ids)
        b.save(
            name=name,
            status="written",
            endpoint=self.url,
            requests=self.requests,
            bytes=self.bytes,
            created=time.time(),
        )
        return b


class _Index:
    """Positions of custom_ids in one call's requests: sorted 32-byte ids, no per-request objects."""

    def __init__(self, ids: np.ndarray):
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]

    def find(self, ids: np.ndarray) -> np.ndarray:
        """The position of each of `ids` in the call, -1 for ids not in it."""
        if len(self.sorted) == 0 or len(ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        j = np.minimum(np.searchsorted(self.sorted, ids), len(self.sorted) - 1)
        return np.where(self.sorted[j] == ids, self.order[j], -1)


class BatchBackend:
    """`openai_batch`: answers a call's requests through batches (module docstring)."""

    local = False
    sampling_fields = ()
    upload = True
    """False (`batch_files`): write the files and wait for outputs beside them."""
    batch_priced = True
    """Its requests cost generator.batch_price_factor x the generator's prices (in2.llm.engine.Usage.price)."""
    bulk = True
    """The engine may commit the answers it caches in groups (a batch's are on disk already)."""

    @classmethod
    def slots(cls, cfg: GeneratorConfig) -> int:
        return cfg.batch_max_requests

    @classmethod
    def model_id(cls, cfg: GeneratorConfig, cache: Cache) -> str:
        """As the synchronous backend: a batch answers the same requests with the same model."""
        return OpenAIBackend.model_id(cfg, cache)

    def __init__(self, cfg: GeneratorConfig):
        self.cfg = cfg
        self.folder = batch_dir(cfg)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._client = None
        if self.upload:
            self._sync = OpenAIBackend(cfg)  # checks the key like the synchronous backend

    @property
    def client(self):
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                api_key=self._sync._key,
                base_url=self.cfg.base_url,
                max_retries=self.cfg.max_retries,
                timeout=self.cfg.timeout_s,
            )
        return self._client

    # -- one call ------------------------------------------------------------------------------
    def run(
        self, requests: Sequence[Request], sampling: dict, done: Callable[[int, Response], None], desc: str
    ) -> None:
        n = len(requests)
        ids = np.empty(n, dtype="S32")
        for i in range(n):
            ids[i] = custom_id(body(requests[i], sampling, self.cfg.model)).encode()
        index = _Index(ids)
        delivered = np.zeros(n, dtype=bool)
        attempts = np.zeros(n, dtype=np.int16)
        errors: dict[int, Response] = {}  # the last failure of requests that failed (few)

        ended_before: set[str] = set()  # batches of earlier runs that had ended when this run began

        def settle(batch: Batch) -> None:
            """Deliver what a finished batch answered; count an attempt for what it did not (a request the batch
            never answered counts only if the batch ended in this run: a rerun tries again after a whole batch
            failed, expired or was cancelled, e.g. once a quota is raised; an error line counts in every run)."""
            pos = index.find(batch.held())
            mine = pos[pos >= 0]
            mine = mine[~delivered[mine]]
            seen = np.zeros(n, dtype=bool)
            for cid, response in batch.results():
                i = int(index.find(np.array([cid.encode()], dtype="S32"))[0])
                if i < 0 or delivered[i] or seen[i]:
                    continue
                seen[i] = True
                if response.error is None and (response.text or "").strip():
                    delivered[i] = True
                    errors.pop(i, None)
                    done(i, response)
                else:
                    attempts[i] += 1
                    errors[i] = response if response.error else Response(text=None, error="batch_empty_reply")
            for i in mine[~seen[mine]]:  # no line at all: the batch failed, expired or was cancelled
                if batch.name in ended_before:
                    continue
                attempts[i] += 1
                ended = batch.state.get("ended") or batch.state.get("status", "failed")
                why = (batch.state.get("errors") or [None])[0]  # the server's reason, e.g. a token quota
                errors[int(i)] = Response(text=None, error=f"batch_{ended}", detail=why)

        # 1. batches of earlier runs that hold requests of this call: drive them to their end
        held_by: list[Batch] = []
        for state in sorted(self.folder.glob("*.json")):  # names start with their time of writing
            b = Batch(self.folder, state.stem)
            if b.ids.exists() and (index.find(b.held()) >= 0).any():
                held_by.append(b)
                if b.status in (*TERMINAL, "downloaded"):
                    ended_before.add(b.name)
        with self.api_errors():
            self.drive(held_by, settle, desc)

        # 2. new batches for what is left, again for what they do not answer, within batch_attempts
        def refused(r: Response) -> bool:
            return r.error.startswith("http_") and r.error[5:].isdigit() and int(r.error[5:]) in REFUSED

        while True:
            todo = ~delivered & (attempts < self.cfg.batch_attempts)
            todo[[i for i, r in errors.items() if refused(r)]] = False
            if not todo.any():
                break
            batches = self.write(requests, sampling, ids, np.flatnonzero(todo))
            with self.api_errors():
                self.drive(batches, settle, desc)

        for i in np.flatnonzero(~delivered):  # refused as asked, or no batch answered it within batch_attempts
            r = errors.get(int(i)) or Response(text=None, error="batch_failed")
            if not refused(r):
                why = f"last: {r.error}" + (f" ({r.detail})" if r.detail else "")
                r = Response(text=None, error="batch_attempts_exhausted", detail=why)
            done(int(i), r)

    @contextmanager
    def api_errors(self):
        """An error of the batch API (after the client's retries) as one line that stops the run."""
        import openai

        where = redact.url(self.cfg.base_url) or "OpenAI API"
        try:
            yield
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise FatalRequestError(
                f"{where} refused the key from ${self.cfg.api_key_env} (HTTP {e.status_code})"
            ) from None
        except openai.APIError as e:
            raise FatalRequestError(
                f"{where} batch API: {redact.text(str(e).splitlines()[0][:200])} (the batches so far are kept in "
                f"{self.folder})"
            ) from None

    # -- writing -------------------------------------------------------------------------------
    def write(self, requests: Sequence[Request], sampling: dict, ids: np.ndarray, todo: np.ndarray) -> list[Batch]:
        """Request files for the positions `todo`, split by endpoint, batch_max_requests and batch_max_mb;
        each streamed to disk as it is written."""
        limit = int(self.cfg.batch_max_mb * 1e6)
        batches: list[Batch] = []
        for kind, url in ENDPOINTS.items():
            writer = None
            for i in todo:
                rq = requests[int(i)]
                if (rq.raw is not None) != (kind == "text"):
                    continue
                cid = ids[i].decode()
                line = (
                    json.dumps(
                        {"custom_id": cid, "method": "POST", "url": url, "body": body(rq, sampling, self.cfg.model)},
                        ensure_ascii=False,
                    ).encode()
                    + b"\n"
                )
                if len(line) > limit:
                    raise ConfigError(
                        f"generator.batch_max_mb: one request is {len(line):,} bytes, more than a batch file may hold"
                    )
                if writer and (writer.requests >= self.cfg.batch_max_requests or writer.bytes + len(line) > limit):
                    batches.append(writer.close())
                    writer = None
                writer = writer or _Writer(self.folder, url)
                writer.add(cid, line)
            if writer:
                batches.append(writer.close())
        return batches

    # -- driving -------------------------------------------------------------------------------
    def drive(self, batches: list[Batch], settle: Callable[[Batch], None], desc: str) -> None:
        """Take `batches` to their end and settle each; `batch_files` stops with BatchPending when an
        output is missing."""
        if not batches:
            return
        if not self.upload:
            waiting = [b for b in batches if not b.output.exists()]
            if waiting:
                raise BatchPending(pending_message(self.cfg, waiting))
            for b in batches:
                if b.status != "completed":
                    b.save(status="completed")
                settle(b)
            return
        live = []
        for b in batches:
            if b.status == "downloaded":
                settle(b)
            else:
                self.submit(b)
                live.append(b)
        total = sum(b.state["requests"] for b in live)
        bar = tqdm(total=total, desc=f"{desc} ({len(live)} batches)", unit="req", disable=not live)
        counted: dict[str, int] = {}
        try:
            while live:
                for b in list(live):
                    remote = self.client.batches.retrieve(b.state["batch_id"])
                    rc = remote.request_counts
                    progress = (rc.completed + rc.failed) if rc else 0
                    bar.update(progress - counted.get(b.name, 0))
                    counted[b.name] = progress
                    if remote.status != b.status or rc:
                        b.save(
                            status=remote.status,
                            counts={"completed": rc.completed, "failed": rc.failed, "total": rc.total} if rc else None,
                        )
                    if remote.status in TERMINAL:
                        self.download(b, remote)
                        settle(b)
                        live.remove(b)
                        bar.update(b.state["requests"] - counted.get(b.name, 0))
                        counted[b.name] = b.state["requests"]
                if live:
                    time.sleep(self.cfg.batch_poll_s)
        finally:
            bar.close()

    def submit(self, b: Batch) -> None:
        """Upload and submit `b` as far as its state says it is not yet (module docstring)."""
        c = self.client
        resumed = b.status == "uploaded"  # uploaded by an earlier run, which may have submitted it before dying
        if b.status == "written":
            with open(b.input, "rb") as f:
                uploaded = c.files.create(file=(b.input.name, f), purpose="batch")
            b.save(status="uploaded", input_file_id=uploaded.id)
        if b.status == "uploaded":
            found = self.find_submitted(b.state["input_file_id"]) if resumed else None
            if found is None:
                found = c.batches.create(
                    input_file_id=b.state["input_file_id"],
                    endpoint=b.state["endpoint"],
                    completion_window="24h",
                    metadata={"in2_batch": b.name},
                )
            b.save(status=found.status, batch_id=found.id, submitted=time.time())

    def find_submitted(self, input_file_id: str):
        """The batch already made from this uploaded file (a run killed before saving its id), or None."""
        for remote in self.client.batches.list(limit=100):  # pages through every batch of the account
            if remote.input_file_id == input_file_id:
                return remote
        return None

    def download(self, b: Batch, remote) -> None:
        for file_id, path in ((remote.output_file_id, b.output), (remote.error_file_id, b.errors)):
            if file_id:
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                with self.client.with_streaming_response.files.content(file_id) as r:
                    r.stream_to_file(tmp)
                with open(tmp, "rb") as f:  # on disk before the state says downloaded (else paid for twice)
                    os.fsync(f.fileno())
                os.replace(tmp, path)
        errors = [e.message for e in (remote.errors.data or [])] if remote.errors else []
        b.save(status="downloaded", ended=remote.status, errors=[redact.text(str(m)[:200]) for m in errors[:3]])


class BatchFilesBackend(BatchBackend):
    """`batch_files`: writes the request files and reads the outputs that `vllm run-batch` writes beside them."""

    upload = False
    batch_priced = False  # a lab's own GPUs: the generator's prices as they are


def pending_message(cfg: GeneratorConfig, waiting: list[Batch]) -> str:
    cmds = "\n".join(f"  vllm run-batch -i {b.input} -o {b.output} --model {cfg.model}" for b in waiting)
    return (
        f"{len(waiting)} batch request files wait for their outputs in {batch_dir(cfg)}; run\n{cmds}\n"
        "(or the same for each *.input.jsonl without its *.output.jsonl), then run this command again to read them"
    )


def status(cfg: GeneratorConfig) -> list[dict]:
    """One row per batch of the run: name, state, requests, counts, answered, failed and cost so far."""
    from in2.llm.engine import Usage

    folder = batch_dir(cfg)
    rows = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        b = Batch(folder, path.stem)
        answered = failed = prompt = completion = 0
        for _, r in b.results():
            if r.error is None:
                answered += 1
                prompt += r.prompt_tokens
                completion += r.completion_tokens
            else:
                failed += 1
        rows.append(
            {
                "batch": b.name,
                "batch_id": b.state.get("batch_id"),
                "status": b.state.get("ended", b.status),
                "requests": b.state.get("requests"),
                "counts": b.state.get("counts"),
                "errors": b.state.get("errors"),
                "answered": answered,
                "failed": failed,
                "cost_usd": round(Usage.price(cfg, prompt, completion), 4),
            }
        )
    return rows


def cancel(cfg: GeneratorConfig) -> list[dict]:
    """Cancel the run's batches that are still live on the server (`in2 synth --batch-cancel`): the server stops
    working on them (and billing for them); what they answered before is kept. A rerun downloads those partial
    outputs and sends the rest again in new batches, counting one attempt. One row per batch cancelled."""
    if backend_class(cfg.backend) is not BatchBackend:
        raise ConfigError(
            f"generator.backend: --batch-cancel cancels Batch API batches (openai_batch), not {cfg.backend!r} "
            "(batch_files batches run where you started them: stop those jobs there)"
        )
    backend = BatchBackend(cfg)
    rows = []
    with one_run(cfg.cache_dir, "in2 synth --batch-cancel"), backend.api_errors():  # not under a live run's feet
        for path in sorted(backend.folder.glob("*.json")):
            b = Batch(backend.folder, path.stem)
            batch_id = b.state.get("batch_id")
            if not batch_id or b.status in (*TERMINAL, "downloaded", "cancelling"):
                continue
            remote = backend.client.batches.cancel(batch_id)
            b.save(status=remote.status)
            rows.append({"batch": b.name, "batch_id": batch_id, "status": remote.status})
    return rows


__all__ = ["BatchBackend", "BatchFilesBackend", "BatchPending", "cancel", "status"]
