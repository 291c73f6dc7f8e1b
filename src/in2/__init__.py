"""in2: IN2 training (FILM-7B) data synthesis, training recipes and evaluation."""

__version__ = "0.1.0"
