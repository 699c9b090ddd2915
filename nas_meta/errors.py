"""Exception types for problems a user can fix; the CLI prints their message without a traceback."""


class NasMetaError(Exception):
    """Base class: the message names the thing at fault, the bad value and what is allowed."""


class ConfigError(NasMetaError, ValueError):
    """A configuration file or value is invalid."""


class DataError(NasMetaError):
    """The Omniglot data is missing, corrupt or laid out wrongly."""


class CheckpointError(NasMetaError):
    """A saved learner folder is incomplete, tampered with or not written by nas-meta."""
