"""The error every stage raises for a bad recipe, override, file or argument: the one thing they all import."""


class ConfigError(ValueError):
    """A recipe, override or input is invalid; the message names the field (and file)."""
