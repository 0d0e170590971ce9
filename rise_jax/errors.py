"""The project's domain errors: one base class, so the CLI reports every one as a single line.

Each module raises its own subclass (``CheckpointError``, ``SelectionError``, ``TrainingError`` ...),
whose message names the file, key or value at fault; ``rise_jax.launch`` catches :class:`RiseError`
and prints ``error: <message>`` instead of a traceback. Subclasses that reject a value also derive
from ``ValueError`` (callers that catch ``ValueError`` keep working).
"""

from __future__ import annotations


class RiseError(Exception):
    """Base of every error rise_jax raises on purpose (bad input, an unfinished stage, a failed run)."""


class SettingError(RiseError, ValueError):
    """A config field with a value the tool cannot use; the message names the field."""


class InputError(RiseError, ValueError):
    """Arrays handed to the API that the model cannot take (token ids outside its vocabulary)."""


# What the CLI reports as one line (and a multi-process job hands between processes as a message):
# the project's own errors, and bad values / missing files / unknown keys raised by the libraries
# it drives (ml_collections, json, the OS).
USER_ERRORS = (RiseError, ValueError, OSError, KeyError)
