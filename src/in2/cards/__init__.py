"""Cards: Markdown with a YAML header rendered from a card template (Jinja). The data card is the
synthesis stage's (in2.synth.card, template data_cards/in2_dataset.md.j2, shipped as in2.data_cards);
the model card (model_card.py) is written by training and refreshed by evaluation."""

from __future__ import annotations

from importlib.resources.abc import Traversable


def render(template: Traversable, **context) -> str:
    """A card template filled with `context`; a value the template asks for and `context` lacks is an error."""
    from jinja2 import Environment, StrictUndefined

    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True)
    return env.from_string(template.read_text(encoding="utf-8")).render(**context)
