"""Exceptions int8kit raises for bad input; each message says what to do."""


class Int8kitError(Exception):
    """Base class: a user-facing error with a message that says what to do."""


class DataError(Int8kitError):
    """Calibration or evaluation data is missing, unusable or does not fit the model."""


class ModelError(Int8kitError):
    """The model cannot be loaded, is unsafe, or lacks what was asked for."""


class CacheFormatError(Int8kitError):
    """A TensorRT calibration cache is malformed."""


class OutputError(Int8kitError, ValueError):
    """An output cannot be written where it was asked for, or would overwrite an input (a
    ValueError too: configs raise it on construction, like their other bad values)."""
