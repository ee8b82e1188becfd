"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""


class SpikerlError(Exception):
    """A problem the user can fix: bad config, missing file, wrong environment, corrupt checkpoint."""


class ConfigError(SpikerlError):
    """A config value is missing, unknown, of the wrong type or out of range."""


class TrainingDiverged(SpikerlError):
    """A loss, parameter or state became NaN or infinite."""


class CheckpointFormatError(SpikerlError):
    """A sound checkpoint written in another format version than this spikerl reads (not corruption)."""
