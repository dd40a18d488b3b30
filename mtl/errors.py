"""The project's exceptions: each message says what to fix and where (field, file, line)."""


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the field."""


class DataError(ValueError):
    """A data file is wrong; the message names the file and line (``train.tsv:17``)."""


class ModelFolderError(ValueError):
    """A model folder is missing a file or was written by an incompatible version."""


class OutputInUseError(RuntimeError):
    """Another job is writing into a label job's output folder; the message names that job."""
