"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""


class SpikerlError(Exception):
    """A problem the user can fix: bad config, missing file, wrong environment, corrupt checkpoint."""


class ConfigError(SpikerlError):
    """A config value is missing, unknown, of the wrong type or out of range."""
