"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: canned answers derived from the
prompt (deterministic), optional faults per request, and a log of what was answered."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def canned_generator(url: str, **fields) -> dict:
    """The `generator` section of a recipe that asks a CannedServer at `url` (model `canned`), plus `fields`."""
    return {"backend": "openai", "model": "canned", "base_url": url, "gguf_file": None, **fields}


def probe_answer(prompt: str) -> str | None:
    """The right answer to a VaL probe question (found by reading the context), or None."""
    m = re.search(r"### Context:\n(.*)\n\n### Instruction:\n(In above context.*)", prompt, re.S)
    if not m:
        return None
    context, question = m.groups()
    if "which sentence contains the piece" in question:
        piece = question.split('contains the piece "', 1)[1].rsplit('"?', 1)[0]
        at = context.find(piece)  # the sentence lies within 400 characters of its piece (sentences <= 40 words)
        return context[max(0, at - 400) : at + 400] if at >= 0 else ""
    if "which function contains the code snip" in question:
        piece = question.split('contains the code snip "', 1)[1].rsplit('" ?', 1)[0]
        for block in re.split(r"\n(?=def )", context):
            if piece in block:
                return f"The function is {block[4:].split(':', 1)[0]}."
        return ""
    qid = question.split("the id is ")[1].split(" ?")[0]
    hit = re.search(rf"<id: {qid}, label: (.*?), description: (.*?)>", context)
    return f"The label is {hit.group(1)} and the description is {hit.group(2)}." if hit else ""


def ruler_answer(prompt: str) -> str | None:
    """The right answer to a RULER needle-in-a-haystack question (the needles' values for the queried keys,
    read from the context) or common-words question (the 10 words the last list repeats most), or None for
    any other prompt."""
    if "What are the 10 most common words in the above list?" in prompt:
        listing = prompt.rsplit("Below is a numbered list of words.", 1)[1].split("Question:", 1)[0]
        counts = Counter(re.findall(r"\d+\. (\S+)", listing))
        return " " + " ".join(f"{i + 1}. {w}" for i, (w, _) in enumerate(counts.most_common(10)))
    m = re.search(r"What (?:are all|is) the special magic \w+ for (.+?) mentioned in the provided text\?", prompt)
    if not m:
        return None
    keys = re.split(r", and |, ", m.group(1))
    values = [
        v for k in keys for v in re.findall(rf"One of the special magic \w+ for {re.escape(k)} is: (\S+?)\.", prompt)
    ]
    return " " + ", ".join(values) + "."


def canned_answer(body: dict) -> str:
    """A well-formed, grounded reply for the in2 QA prompts and VaL probes (or a fixed string otherwise)."""
    prompt = body["messages"][0]["content"] if "messages" in body else body["prompt"]
    if not isinstance(prompt, str):  # token ids (lm-eval's tokenized requests)
        return "ok"
    probe = probe_answer(prompt)
    if probe is not None:
        return probe
    ruler = ruler_answer(prompt)
    if ruler is not None:
        return ruler
    m = re.search(r"### Context ###\n(.*)\n\nReply with", prompt, re.S)
    if not m:
        return "ok"
    context = m.group(1)
    integration = "[Piece 1]" in context
    words = re.sub(r"\[Piece \d+\]", " ", context).split()
    question = f"What is said about {' '.join(words[:3])}?"
    answer = " ".join(words[3:15])
    reply = f"Question: {question}\nAnswer: {answer}"
    if integration:
        reply += "\nPieces: [Piece 1], [Piece 2]"
    messages = body.get("messages", [])
    prefix = messages[-1]["content"] if messages and messages[-1]["role"] == "assistant" else ""
    if prefix:  # continue_final_message: return the rest of the current line only
        rest = reply[len(prefix) :] if reply.startswith(prefix) else ""
        return rest.split("\n", 1)[0]
    return reply


def body_key(body: dict) -> str:
    return hashlib.sha256(json.dumps(body.get("messages", body.get("prompt")), sort_keys=True).encode()).hexdigest()[
        :16
    ]


def completion(body: dict, key: str, text: str) -> dict:
    """The chat or text completion object that answers `body` with `text`."""
    raw = "messages" not in body  # /v1/completions: a raw prompt
    choice = {"index": 0, "finish_reason": "stop"}
    choice.update({"text": text} if raw else {"message": {"role": "assistant", "content": text}})
    prompt_tokens = len(json.dumps(body.get("messages", body.get("prompt")))) // 4
    return {
        "id": "cmpl-" + key,
        "object": "text_completion" if raw else "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text) // 4,
            "total_tokens": prompt_tokens + len(text) // 4,
        },
    }


BATCH_FAULTS = ("failed", "expired", "cancelled", "errors", "refused", "slow")
"""What `batch_faults` may do to a batch: fail whole (no output), expire or be cancelled (by someone else)
with half its requests answered, answer every third request with an HTTP 500 line in the error file
(`refused`: HTTP 400), or stay in progress for `slow_polls` looks."""


def multipart_file(raw: bytes, content_type: str) -> bytes:
    """The `file` part of a multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    for part in raw.split(b"--" + boundary):
        head, _, content = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return content[:-2] if content.endswith(b"\r\n") else content
    raise ValueError("no file part")


CHAOS = ("429", "500", "hang", "invalid_json", "truncated_json", "empty", "refusal", "drop")
TRANSIENT = tuple(k for k in CHAOS if k != "refusal")  # faults a retry cures; a refusal is an answer
REFUSAL = "I'm sorry, but I can't help with that request."


class _QuietServer(ThreadingHTTPServer):
    """Says nothing when a client hangs up before its answer is written (timeouts, killed runs)."""

    request_queue_size = 1024  # benchmarks open hundreds of connections at once

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class CannedServer:
    """`faults` maps a request's attempt number (1-based, per distinct body) to an HTTP status.
    `chaos_rate` makes that share of attempts fail in one of `chaos_kinds` (default CHAOS), chosen by a
    hash of the body and attempt number (so a rerun meets the same faults); a `hang` sleeps `hang_s`,
    past the client's timeout. An empty reply does not count as answered."""

    def __init__(
        self,
        faults: dict[int, int] | None = None,
        status_for_all: int | None = None,
        latency_s: float = 0.0,
        chaos_rate: float = 0.0,
        hang_s: float = 3.0,
        chaos_kinds: tuple[str, ...] = CHAOS,
        error_code: str | None = None,
        port: int = 0,
        models: tuple[str, ...] = ("canned",),
    ):
        self.faults = faults or {}
        self.error_code = (
            error_code  # the `code` of injected error bodies (default: the status), e.g. insufficient_quota
        )
        self.latency_s = latency_s
        self.chaos_rate, self.hang_s, self.chaos_kinds = chaos_rate, hang_s, chaos_kinds
        self.chaos: Counter = Counter()
        self.status_for_all = status_for_all
        self.attempts: Counter = Counter()
        self.answered: Counter = Counter()
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.auth: list[str | None] = []
        self.on_request = None  # callable(n_answered_so_far) -> True to drop the request unanswered
        # the batch API: uploaded files, batches in order of creation, faults by batch number (1-based)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_faults: dict[int, str] = {}
        self.slow_polls = 4
        self.on_batch_api = None  # callable(event) -> True to drop the request unanswered (kill -9 schedules)
        self.batch_events: Counter = Counter()  # upload, create (after the batch exists), retrieve, content
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # /v1/models: `models` (default the model every canned_generator names); the batch API
                outer.paths.append(self.path)
                if "/files" in self.path or "/batches" in self.path:
                    reply = outer.batch_api("GET", self.path, b"", "")
                    if reply is not None:
                        self.reply(*reply)
                    return
                if not self.path.rstrip("/").endswith("/models"):
                    self.send_error(404)
                    return
                data = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in models]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def reply(self, obj: dict | bytes, status: int = 200) -> None:
                data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if "/files" in self.path or "/batches" in self.path:
                    outer.paths.append(self.path)
                    reply = outer.batch_api("POST", self.path, raw, self.headers.get("Content-Type", ""))
                    if reply is not None:
                        self.reply(*reply)
                    return
                body = json.loads(raw)
                outer.paths.append(self.path)
                outer.auth.append(self.headers.get("Authorization"))
                key = body_key(body)
                with outer.lock:
                    outer.attempts[key] += 1
                    attempt = outer.attempts[key]
                    outer.bodies.append(body)
                    hook, answered = outer.on_request, sum(outer.answered.values())
                if hook and hook(answered):
                    return
                if outer.latency_s:
                    time.sleep(outer.latency_s)
                fault = outer.pick_fault(key, attempt)
                if fault in ("hang", "drop", "invalid_json", "truncated_json"):
                    with outer.lock:
                        outer.chaos[fault] += 1
                    if fault == "hang":
                        time.sleep(outer.hang_s)
                    if fault in ("hang", "drop"):
                        self.close_connection = True
                        return
                    payload = b"{not json" if fault == "invalid_json" else b'{"id": "x", "choices": [{"index": 0, "mess'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault in ("429", "500"):
                    with outer.lock:
                        outer.chaos[fault] += 1
                status = (
                    outer.status_for_all
                    or outer.faults.get(attempt)
                    or (int(fault) if fault in ("429", "500") else None)
                )
                if status:
                    payload = json.dumps(
                        {"error": {"message": "injected", "type": "test", "code": outer.error_code or status}}
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("retry-after-ms", "5")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                text = canned_answer(body)
                if fault in ("empty", "refusal"):
                    with outer.lock:
                        outer.chaos[fault] += 1
                    text = "" if fault == "empty" else REFUSAL
                payload = json.dumps(completion(body, key, text)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                if fault != "empty":
                    with outer.lock:
                        outer.answered[key] += 1

        self.httpd = _QuietServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def batch_api(self, method: str, path: str, raw: bytes, content_type: str) -> tuple | None:
        """The reply (object or bytes, status) to a /v1/files or /v1/batches request; None: drop it."""
        path = path.split("?", 1)[0].rstrip("/")
        parts = path.split("/")
        event = {
            ("POST", "files"): "upload",
            ("POST", "batches"): "create",
            ("GET", "content"): "content",
        }.get((method, parts[-1]), "retrieve" if method == "GET" and parts[-2] == "batches" else None)
        with self.lock:
            if method == "POST" and parts[-1] == "files":
                data = multipart_file(raw, content_type)
                fid = f"file-{len(self.files) + 1:04d}"
                self.files[fid] = data
                obj = {
                    "id": fid,
                    "object": "file",
                    "bytes": len(data),
                    "created_at": 0,
                    "filename": "in.jsonl",
                    "purpose": "batch",
                    "status": "processed",
                }
            elif method == "POST" and parts[-1] == "batches":
                req = json.loads(raw)
                if req["input_file_id"] not in self.files:
                    return {"error": {"message": "no such file", "type": "invalid_request_error", "code": None}}, 404
                bid = f"batch_{len(self.batches) + 1:04d}"
                obj = self.batches[bid] = {
                    "id": bid,
                    "object": "batch",
                    "endpoint": req["endpoint"],
                    "input_file_id": req["input_file_id"],
                    "completion_window": req["completion_window"],
                    "status": "validating",
                    "created_at": 0,
                    "metadata": req.get("metadata"),
                    "output_file_id": None,
                    "error_file_id": None,
                    "errors": None,
                    "request_counts": {"total": 0, "completed": 0, "failed": 0},
                    "fault": self.batch_faults.get(len(self.batches) + 1),
                    "polls": 0,
                }
            elif method == "POST" and parts[-1] == "cancel":
                obj = self.batches[parts[-2]]
                if obj["status"] not in ("completed", "failed", "expired", "cancelled"):
                    self.run_batch(obj, "cancelled")
            elif method == "GET" and parts[-1] == "content":
                obj = self.files[parts[-2]]
            elif method == "GET" and parts[-1] == "batches":
                obj = {"object": "list", "data": [self.public(b) for b in self.batches.values()], "has_more": False}
            elif method == "GET" and parts[-2] == "batches":
                obj = self.batches[parts[-1]]
                obj["polls"] += 1
                if obj["status"] in ("validating", "in_progress"):
                    needed = self.slow_polls if obj["fault"] == "slow" else 2
                    if obj["polls"] >= needed:
                        self.run_batch(obj, "cancelled" if obj["fault"] == "cancelled" else "completed")
                    else:
                        obj["status"] = "in_progress"
            else:
                return {"error": {"message": "not found", "type": "invalid_request_error"}}, 404
        if event and self.on_batch_api and self.on_batch_api(event):
            return None
        if event:
            with self.lock:
                self.batch_events[event] += 1
        return (obj if isinstance(obj, bytes) else self.public(obj) if obj.get("object") == "batch" else obj), 200

    @staticmethod
    def public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k not in ("fault", "polls")}

    def run_batch(self, batch: dict, ending: str) -> None:
        """Answer a batch's requests (as its fault says) and write its output and error files."""
        lines = [json.loads(x) for x in self.files[batch["input_file_id"]].decode().splitlines() if x.strip()]
        fault = batch["fault"]
        out, err = [], []
        if fault == "failed":
            batch.update(
                status="failed",
                errors={"object": "list", "data": [{"code": "injected", "message": "injected failure"}]},
            )
            batch["request_counts"] = {"total": len(lines), "completed": 0, "failed": 0}
            return
        answer = lines[: len(lines) // 2] if fault == "expired" or ending == "cancelled" else lines
        for k, line in enumerate(answer):
            rid = f"batch_req_{batch['id']}_{k}"
            if fault in ("errors", "refused") and k % 3 == 1:
                status = 500 if fault == "errors" else 400
                body = {"error": {"message": "injected", "type": "test", "code": str(status)}}
                err.append(
                    {
                        "id": rid,
                        "custom_id": line["custom_id"],
                        "error": None,
                        "response": {"status_code": status, "request_id": rid, "body": body},
                    }
                )
                continue
            key = body_key(line["body"])
            body = completion(line["body"], key, canned_answer(line["body"]))
            out.append(
                {
                    "id": rid,
                    "custom_id": line["custom_id"],
                    "error": None,
                    "response": {"status_code": 200, "request_id": rid, "body": body},
                }
            )
            self.answered[key] += 1
        for name, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                fid = f"file-{len(self.files) + 1:04d}"
                self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[name] = fid
        batch["status"] = "expired" if fault == "expired" else ending
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}

    def kill_on(self, start, event: str, nth: int = 1) -> None:
        """Start a process with `start()` and kill -9 it when this server gets its `nth` batch API request
        of kind `event` (upload, create, retrieve, content): that request goes unanswered; a `create`
        makes its batch first (the client never learns its id)."""
        proc = start()
        seen = Counter()

        def hook(ev):
            seen[ev] += 1
            if ev == event and seen[ev] >= nth:
                proc.send_signal(signal.SIGKILL)
                return True
            return False

        self.on_batch_api = hook
        code = proc.wait(timeout=120)
        self.on_batch_api = None
        assert code == -signal.SIGKILL, f"the run ended before {event} #{nth}: {proc.stdout.read()}"

    def kill_at(self, start, points: list[int]) -> None:
        """For each count in `points`, start a process with `start()` and kill -9 it once this server has
        answered that many requests (the request arriving then goes unanswered)."""
        for kill_at in points:
            proc = start()

            def hook(answered, proc=proc, kill_at=kill_at):
                if answered >= kill_at:
                    proc.send_signal(signal.SIGKILL)
                    return True
                return False

            self.on_request = hook
            assert proc.wait(timeout=300) == -signal.SIGKILL, f"the run ended before {kill_at} answers"
        self.on_request = None

    def pick_fault(self, key: str, attempt: int) -> str | None:
        if not self.chaos_rate:
            return None
        h = int(hashlib.sha256(f"{key}:{attempt}".encode()).hexdigest()[:8], 16)
        if (h % 10000) / 10000 >= self.chaos_rate:
            return None
        return self.chaos_kinds[(h // 10000) % len(self.chaos_kinds)]

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def in2_process(*args: str, **env: str) -> subprocess.Popen:
    """`python -m in2.cli ARGS` in its own process (the checkout's src/ first on PYTHONPATH, so it runs the code
    under test rather than an installed in2; the root for `tests.*`), output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "in2.cli", *args],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(Path(__file__).resolve().parents[1] / p) for p in ("src", "")),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_when(start, points: list[int], progress, timeout: float = 300) -> None:
    """For each value in `points`, start a process with `start()` and kill -9 it as soon as `progress()`
    (polled every 2 ms) reaches that value: for runs that send no request, such as a merge."""
    for point in points:
        proc = start()
        deadline = time.monotonic() + timeout
        while progress() < point:
            assert proc.poll() is None, f"the run ended before progress {point}"
            assert time.monotonic() < deadline, f"no progress {point} after {timeout} s"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL, f"the run ended before progress {point}"
