"""The exceptions nas-meta raises for problems a user can fix, in one hierarchy.

The CLI prints a :class:`NasMetaError` as one line (exit status 2); any other exception is a bug in
nas-meta and shows its traceback (exit status 1).
"""


class NasMetaError(Exception):
    """Base class: the message names the thing at fault, the bad value and what is allowed."""


class ConfigError(NasMetaError, ValueError):
    """A configuration file or value (YAML field, CLI argument, API argument) is invalid."""


class DataError(NasMetaError):
    """The Omniglot data is missing, corrupt or laid out wrongly."""


class CheckpointError(NasMetaError):
    """A saved learner folder is incomplete, tampered with or not written by nas-meta."""


class StorageError(NasMetaError):
    """An Optuna storage cannot be reached or used."""


class StudyFinished(NasMetaError):
    """The study already holds the requested number of trials."""


class TrialDiverged(NasMetaError):
    """Meta-training produced NaN/inf: the trial ends as FAIL with the reason in its user attributes."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (how SLURM, Kubernetes and systemd stop a job), raised like Ctrl-C so it is handled the same way:
    the running trial is closed and queued again, worker processes are stopped, the command exits with 143."""
