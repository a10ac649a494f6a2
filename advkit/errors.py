"""Known failures. The CLI prints each as one line ``error: <message>`` and exits non-zero."""

from __future__ import annotations


class AdvkitError(Exception):
    """Base class of every failure advkit knows how to explain in one line."""

    exit_code: int = 1


class UsageError(AdvkitError):
    """An argument is out of range or inconsistent with another."""

    exit_code = 2


class UnknownNameError(AdvkitError):
    """A model, dataset, attack or denoiser name that is not registered."""

    exit_code = 2


class WeightsNotFoundError(AdvkitError):
    """No weights file given or cached, and they cannot be downloaded."""


class ImageReadError(AdvkitError):
    """A file that is missing, not an image, or a corrupt image."""


class DataSourceError(AdvkitError):
    """A dataset path that does not exist or has an unknown layout."""


class StoreFormatError(AdvkitError):
    """An HDF5 file that is not a valid advkit store of the expected kind and version."""


class CheckpointError(AdvkitError):
    """A checkpoint that is missing, truncated, of the wrong architecture, or not loadable safely."""


class OutputExistsError(AdvkitError):
    """The output exists and neither --resume nor --overwrite was given."""


class OutputError(AdvkitError):
    """An output path that cannot be written (read-only folder, a directory in the way, disk full)."""
