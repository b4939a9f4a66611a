"""The errors ptm_func raises on purpose, each with a message that says what to do.

This module imports nothing heavy (no torch), so the CLI can tell a usage error (exit 2) from
a runtime one (exit 1) before torch is loaded.
"""

from __future__ import annotations


class SettingsError(ValueError):
    """A run's settings are invalid or do not fit together (the CLI's usage error, exit 2)."""


class UnknownModelError(KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:
        return str(self.args[0])


class ModelConfigError(ValueError):
    """A config option the model does not take, or a size out of its range."""


class ModelReferenceError(ModelConfigError):
    """A model reference (FILE.py:ATTR, package.module:ATTR, an installed name) that cannot be
    used, or a checkpoint of a user's model loaded without its reference given again."""


class DataError(ValueError):
    """The data could not be found, fetched or read; the message says what to do."""


class ClassChoiceError(DataError):
    """The classes asked for do not exist there, repeat, or do not fit the model's outputs."""


class DeviceError(ValueError):
    """The requested device is not available here."""


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model; the message says which."""


class RecordError(ValueError):
    """A run record is missing, unreadable or cannot be written; the message says which file."""


class SweepError(ValueError):
    """A sweep cannot be planned, resumed or saved; the message says why."""


class OutputInUse(RuntimeError):
    """Another process is writing the same output (a run's checkpoint, a sweep's folder)."""


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed (the `plot` extra)."""


class TrackerUnavailable(RuntimeError):
    """A tracker asked for with --track is not installed (the `tensorboard` or `mlflow` extra)."""


class StudyStorageError(RuntimeError):
    """A study's storage cannot be reached, refuses the login, or cannot be written (exit 1)."""


# Errors in what the user asked for, as opposed to what happened while running.
USAGE_ERRORS = (
    SettingsError,
    UnknownModelError,
    ModelConfigError,
    DeviceError,
    ClassChoiceError,
    TrackerUnavailable,
)
