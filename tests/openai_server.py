"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: canned answers derived from the
prompt (deterministic), optional faults per request, and a log of what was answered."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def canned_answer(body: dict) -> str:
    """A well-formed, grounded reply for the in2 QA prompts (or a fixed string otherwise)."""
    prompt = body["messages"][0]["content"]
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
        reply += "\nPieces: 1, 2"
    prefix = body["messages"][-1]["content"] if body["messages"][-1]["role"] == "assistant" else ""
    if prefix:  # continue_final_message: return the rest of the current line only
        rest = reply[len(prefix) :] if reply.startswith(prefix) else ""
        return rest.split("\n", 1)[0]
    return reply


def body_key(body: dict) -> str:
    return hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()[:16]


class CannedServer:
    """`faults` maps a request's attempt number (1-based, per distinct body) to an HTTP status."""

    def __init__(self, faults: dict[int, int] | None = None, status_for_all: int | None = None):
        self.faults = faults or {}
        self.status_for_all = status_for_all
        self.attempts: Counter = Counter()
        self.answered: Counter = Counter()
        self.bodies: list[dict] = []
        self.on_request = None  # callable(n_answered_so_far) -> True to drop the request unanswered
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = body_key(body)
                with outer.lock:
                    outer.attempts[key] += 1
                    attempt = outer.attempts[key]
                    outer.bodies.append(body)
                    hook, answered = outer.on_request, sum(outer.answered.values())
                if hook and hook(answered):
                    return
                status = outer.status_for_all or outer.faults.get(attempt)
                if status:
                    payload = json.dumps({"error": {"message": "injected", "type": "test", "code": status}}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("retry-after-ms", "5")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                text = canned_answer(body)
                payload = json.dumps(
                    {
                        "id": "cmpl-" + key,
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                        ],
                        "usage": {
                            "prompt_tokens": len(json.dumps(body["messages"])) // 4,
                            "completion_tokens": len(text) // 4,
                            "total_tokens": len(json.dumps(body["messages"])) // 4 + len(text) // 4,
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                with outer.lock:
                    outer.answered[key] += 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
