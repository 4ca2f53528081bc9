"""fastnn's exceptions. Every message names the problem and what fixes it."""


class FastnnError(Exception):
    """Base class: the command line prints these as one clear line, not a traceback."""


class ConfigError(FastnnError, ValueError):
    """A setting (environment variable, argument, name) has a value that cannot work."""


class BackendUnavailableError(FastnnError, RuntimeError):
    """A backend was asked for that cannot load here; the message says how to get it."""


class ShapeError(FastnnError, ValueError):
    """An array reached a layer with the wrong shape or dtype; the message names the layer."""


class DataError(FastnnError, ValueError):
    """A data file is missing, truncated, corrupt (checksum) or not an IDX file."""


class CheckpointError(FastnnError, ValueError):
    """A model or checkpoint file is unreadable, unsafe, or does not match its model."""


class TrainingDivergedError(FastnnError, RuntimeError):
    """The loss became NaN or infinite."""


class DistributedError(FastnnError, RuntimeError):
    """A distributed run cannot start (no MPI, no launcher) or its ranks lost each other."""
