"""How the CLI shows rise_jax's messages.

Modules report progress with absl logging (``from absl import logging``; ``logging.info(...)``),
as the Flax examples and MaxText do; tables and the report are printed. :func:`show_messages`
(called by ``rise_jax.launch``) makes the INFO records of rise_jax's own modules appear as plain
lines on standard output, while other libraries' INFO records (orbax, jax) stay hidden unless
asked for (``--verbosity=0`` or higher); warnings and errors go to standard error as before.
Library users who call the API directly get Python's logging defaults (INFO not shown).

:func:`quiet_library_warnings` (called by the CLI before any library is imported, and by
:func:`show_messages`) turns off transformers' *advisory* warnings — on a machine without torch,
importing transformers prints "PyTorch was not found. Models won't be available ...", which is
true and irrelevant here (rise_jax uses transformers for tokenizers and configs only). Its real
warnings and errors still show; set ``TRANSFORMERS_NO_ADVISORY_WARNINGS=0`` to see the advice.
"""

from __future__ import annotations

import logging as py_logging
import os
import sys

from absl import logging

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _ours(record: py_logging.LogRecord) -> bool:
    return os.path.abspath(record.pathname).startswith(_PACKAGE)


class _OwnInfoToStdout(py_logging.Handler):
    """INFO records from rise_jax's modules as plain lines on the *current* ``sys.stdout``."""

    def __init__(self):
        super().__init__(py_logging.INFO)
        self.addFilter(lambda r: r.levelno == py_logging.INFO and _ours(r))

    def emit(self, record: py_logging.LogRecord) -> None:
        from rise_jax.distributed import is_writer

        if not is_writer():  # a multi-process job's progress is shown once, by process 0
            return
        try:
            sys.stdout.write(record.getMessage() + "\n")
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 — logging must never raise
            self.handleError(record)


class _NotOurInfo(py_logging.Filter):
    """For absl's own handler: warnings and errors always; INFO of other libraries only when asked."""

    def __init__(self, library_info: bool):
        super().__init__()
        self.library_info = library_info

    def filter(self, record: py_logging.LogRecord) -> bool:
        return record.levelno >= py_logging.WARNING or (self.library_info and not _ours(record))


def quiet_library_warnings() -> None:
    """Silence transformers' advisory warnings (``logger.warning_advice``: "PyTorch was not found",
    ...) unless the environment already decides; read when transformers logs them, so it must run
    before transformers is imported. Nothing else is hidden."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def verbose_flag() -> bool:
    """Whether absl's ``--verbosity`` was given on the command line (other libraries' INFO wanted)."""
    from absl import flags

    return bool(flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present)


def show_messages(library_info: bool = False) -> None:
    """Route rise_jax's INFO messages to stdout (idempotent); ``library_info`` also lets other
    libraries' INFO records through absl's handler.

    The absl logger gets both handlers itself and stops propagating, so a root handler that some
    library installed with ``basicConfig`` does not print every message a second time."""
    quiet_library_warnings()
    absl_logger = logging.get_absl_logger()
    if not any(isinstance(h, _OwnInfoToStdout) for h in absl_logger.handlers):
        absl_logger.addHandler(_OwnInfoToStdout())
    handler = logging.get_absl_handler()
    if handler not in absl_logger.handlers:
        absl_logger.addHandler(handler)
    absl_logger.propagate = False
    if not library_info:
        logging.set_verbosity(logging.INFO)
    for f in [f for f in handler.filters if isinstance(f, _NotOurInfo)]:
        handler.removeFilter(f)
    handler.addFilter(_NotOurInfo(library_info))
