"""One engine to send chat prompts to a model and get text back (synthesis and evaluation)."""

from in2.llm.base import Request, Response
from in2.llm.engine import Engine, Usage

__all__ = ["Engine", "Request", "Response", "Usage"]
