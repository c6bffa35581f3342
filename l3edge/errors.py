"""Typed errors. The library raises these; only the CLI turns them into exit codes.

Every message is one line that names what is wrong and, where possible, what the user can do.
Messages name paths, counts and shapes, never patient data.
"""

from __future__ import annotations


class L3EdgeError(Exception):
    """Base class of every error l3edge raises on purpose."""

    exit_code = 1


class InputError(L3EdgeError):
    """A scan cannot be read or is unusable (exit code 3)."""

    exit_code = 3


class ModelError(L3EdgeError):
    """The model is missing, is not an OpenVINO IR, or lacks valid l3edge metadata (exit code 4)."""

    exit_code = 4


class UsageError(L3EdgeError):
    """The command line or API call is inconsistent (exit code 2)."""

    exit_code = 2
