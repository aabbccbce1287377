"""User-facing errors: each one is printed as a single line by the entry points."""


class DistganError(Exception):
    """Bad input (config, data, checkpoint) that the user can fix; the message says how."""


class ConfigError(DistganError):
    """A config key is unknown, mistyped or impossible."""
