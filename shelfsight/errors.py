"""Exceptions for user mistakes and bad input.

Every error a user can cause is a `ShelfsightError`; the CLI prints its message on one
line and exits non-zero. Anything else escaping is a bug and keeps its traceback.
"""


class ShelfsightError(Exception):
    """Base class: a user mistake or bad input, reported as one line.

    Exit codes, for a supervisor (see `shelfsight service unit`): 0 the run ended (source
    finished, SIGTERM); 2 a mistake in the command or its settings (restarting will not
    help); 3 a source that is not there (yet): a camera still booting, a stream down (retry);
    1 anything else (a bug: its traceback is printed).
    """

    exit_code = 2


class ConfigError(ShelfsightError):
    """An option value is out of range or options contradict each other."""


class DatasetError(ShelfsightError):
    """A dataset cannot be read: unknown layout, empty class, unknown label."""


class BundleError(ShelfsightError):
    """A bundle is missing, incomplete, tampered with or of an unsupported version."""


class IndexMismatchError(BundleError):
    """A search index does not belong to the model or catalog it is loaded with."""


class ModelError(ShelfsightError):
    """A model file cannot be built, loaded or converted."""


class SourceError(ShelfsightError):
    """A frame source cannot be opened (it may come back: a supervisor retries)."""

    exit_code = 3


class RuntimeUnavailableError(ShelfsightError):
    """No TFLite interpreter, delegate or optional backend is installed."""
