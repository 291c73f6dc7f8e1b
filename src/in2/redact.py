"""The one sanitizer: credentials never reach a file, a log line or another library's arguments.

`url` drops the userinfo of a URL (`user:password@`) and blanks query values named like credentials
(`token`, `key`, `sig`, `X-Amz-Signature`...). `text` does the same to every URL inside free text and
blanks key-looking values (`sk-...`, `hf_...`, `Bearer ...`) and `name: value` / `name=value` pairs
whose name says token, secret, password or API key. `data` applies both to a nested config or
manifest. `scrub_logs` routes every log record, warning and uncaught traceback of the process through
`text`.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
import warnings
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

REDACTED = "<redacted>"

# A name is a credential's when one of its words (split at _ - . and case changes) is one of these,
# e.g. hub_token, api_key, X-Amz-Signature; never names of environment variables, files or counts
# (api_key_env, token_file, max_tokens) or a tokenizer's special tokens (pad_token, eos_token).
_WORDS = {"token", "secret", "password", "passwd", "pwd", "apikey", "credential", "credentials", "signature", "auth"}
_WORDS |= {"authorization", "cookie"}
_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("client", "secret")}
_QUERY_WORDS = _WORDS | {"key", "sig", "code"}
_NOT_SECRET_SUFFIX = ("env", "file", "path", "dir", "url", "type", "id")
_SPECIAL_TOKENS = {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "additional", "special"}

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>`|]+")
_KEY_LIKE = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|AKIA[0-9A-Z]{16}|xox[abprs]-[A-Za-z0-9-]{10,})"
)
_AUTH_HEADER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}")
# `name: value` (YAML, logs, reprs) or `name=value` (query and argument strings), quoted values too; a
# YAML line's value runs to the end of the line
_YAML_PAIR = re.compile(r"""^(?P<name>\s*-?\s*[A-Za-z_][\w.-]*)(?P<sep>\s*:[ \t]+)(?P<value>[^\n#]*[^\s#])""", re.M)
_PAIR = re.compile(
    r"""(?P<name>[A-Za-z_][\w.-]*["']?)(?P<sep>\s*[:=]\s*)(?P<value>"[^"\n]*"|'[^'\n]*'|[^\s,;&'"}\]]+)"""
)


_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SPLIT = re.compile(r"[\s_.\-]+")


def _words(name: str) -> list[str]:
    return [w for w in _SPLIT.split(_CAMEL.sub(r"\1 \2", name).lower()) if w]


def secret_name(name: str, query: bool = False) -> bool:
    """Whether a field, YAML key or query parameter called `name` holds a credential."""
    words = _words(name)
    if not words or words[-1] in _NOT_SECRET_SUFFIX:
        return False
    if words[0] in _SPECIAL_TOKENS and "token" in words:
        return False
    known = _QUERY_WORDS if query else _WORDS
    return any(w in known for w in words) or any(p in _PAIRS for p in zip(words, words[1:], strict=False))


def url(value: str | None) -> str | None:
    """`value` without userinfo and with credential-named query values blanked; safe to print or store."""
    if not value:
        return value
    try:
        p = urlsplit(value)
        host = p.hostname
        port = p.port
    except ValueError:
        return REDACTED if "@" in value else value
    if not p.netloc and not p.query:
        return value
    netloc = p.netloc
    if "@" in netloc:
        netloc = (f"[{host}]" if host and ":" in host else host or "") + (f":{port}" if port else "")
    query = p.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(secret_name(k, query=True) for k, _ in pairs):
            query = urlencode([(k, REDACTED if secret_name(k, query=True) else v) for k, v in pairs], safe="<>")
    return urlunsplit((p.scheme, netloc, p.path, query, p.fragment))


def userinfo(value: str) -> tuple[str, str | None]:
    """(`value` without its userinfo, "user:password" or None): for handing a URL's login to a client
    as a header instead of inside the URL, where it would be logged with it."""
    p = urlsplit(value)
    if "@" not in p.netloc:
        return value, None
    login = f"{unquote(p.username or '')}:{unquote(p.password or '')}"
    host = p.netloc.rsplit("@", 1)[1]
    return urlunsplit((p.scheme, host, p.path, p.query, p.fragment)), login


def _pair(m: re.Match) -> str:
    if not secret_name(m.group("name").strip(" \t-'\"")):
        return m.group(0)
    value = m.group("value")
    if value.startswith(("'", '"')) and len(value) >= 2:
        return f"{m.group('name')}{m.group('sep')}{value[0]}{REDACTED}{value[0]}"
    return f"{m.group('name')}{m.group('sep')}{REDACTED}"


def text(value: str) -> str:
    """`value` with every URL sanitized and key-looking values and credential pairs blanked."""
    if not value:
        return value
    out = _URL.sub(lambda m: url(m.group(0)) or "", value)
    out = _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {REDACTED}", out)
    out = _KEY_LIKE.sub(REDACTED, out)
    out = _YAML_PAIR.sub(_pair, out)
    return _PAIR.sub(_pair, out)


def data(value: Any, name: str | None = None) -> Any:
    """A copy of a nested dict/list/tuple with credential-named fields blanked and every string sanitized."""
    if name is not None and isinstance(value, str) and value and secret_name(name):
        return REDACTED
    if isinstance(value, dict):
        return {k: data(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(data(v) for v in value)
    if isinstance(value, str):
        return text(value)
    return value


def scrub_logs() -> None:
    """Sanitize every log record created from now on (in2's and every library's) before any handler
    formats it, every warning shown and the traceback of an uncaught exception. Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "in2_redacts", False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
            clean = text(message)
        except Exception:  # a malformed record (or the interpreter shutting down): leave it to logging
            return record
        if clean != message:
            record.msg, record.args = clean, None
        return record

    factory.in2_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        show(text(str(message)), category, filename, lineno, file, line)

    warnings.showwarning = showwarning

    def excepthook(kind, value, tb):
        sys.stderr.write(text("".join(traceback.format_exception(kind, value, tb))))

    sys.excepthook = excepthook
