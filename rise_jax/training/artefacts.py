"""Compact checkpoints of what trained (orbax), plus the selection and config.

Layout of ``<workdir>/train``: ``experts/`` (orbax; the training method's two fields as
``{"weights": ..., "slots": ...}``, each method's module in :mod:`rise_jax.training.methods`
documents its trees: ``experts`` ``{run: {gate_proj, up_proj, down_proj}}`` + ``{run: int32
[n, E]}``; ``rise_lora`` ``{run: {proj: {lora_a [K, r, in], lora_b [K, out, r]}}}`` + the slot
tables and ``lora_scale``; ``lora`` ``{"lora_dense": <params-shaped subtree with {lora_a, lora_b}
at each adapted kernel>}`` + ``{lora_scale}``; the checkpoint holds no method name: the method
whose trees these are reads it back), ``selection.json`` (the selection trained),
``train_config.json``, ``summary.json``, ``metrics.jsonl``, ``tensorboard/``, ``checkpoints/``
(resumable training state).

The resumable state (``checkpoints/<micro-step>/``, :func:`save_training_state` /
:func:`restore_training_state`) is one orbax pytree per step plus, in the step's custom metadata,
the trainable row layout it was saved with (``expert_layout``: run -> slot table ``[n, E]``). It
resumes on any device count: arrays are read straight onto the current run's shardings, and when
the rows were laid out for another count (expert-parallel training groups the trainable copies
by owner device, :func:`~rise_jax.training.partition.expert_slots`) every row leaf — weights,
optimiser moments, gradient sum — is moved to the current layout. Only a checkpoint whose files
are damaged (a crash or a full disk while writing it) is deleted, with what was wrong in the log;
an intact one this run cannot use (another training method or optimiser) stops the run with
:class:`ResumeError` and is kept. A full disk while saving raises one ``OSError(ENOSPC)`` naming the
directory (orbax's own error logs are held back: the raised error says it all).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging as py_logging
import os
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from rise_jax.errors import RiseError
from rise_jax.training.methods import from_checkpoint
from rise_jax.training.methods.base import TrainingMethod

# The training directory's own layout (the loop writes the first three, the stage the experts).
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
METRICS = "metrics.jsonl"
EXPERTS = "experts"
TRAIN_STATE_DIRS = (CHECKPOINTS, EXPERTS, TENSORBOARD)  # what a reset removes, with METRICS
TRAIN_STATE_FILES = (METRICS,)


def save_trained_experts(directory: str, trainable: TrainingMethod) -> str:
    target = os.path.abspath(os.path.join(directory, EXPERTS))
    with ocp.StandardCheckpointer() as ckptr:
        # slots are host bookkeeping (int tables): NumPy, which orbax writes once in a multi-process job
        slots = jax.tree_util.tree_map(np.asarray, trainable.slots)
        ckptr.save(target, {"weights": trainable.weights, "slots": slots}, force=True)
    return target


def load_trained_experts(directory: str) -> TrainingMethod:
    """The training method saved by :func:`save_trained_experts` (``directory`` = ``<workdir>/train``)."""
    target = os.path.abspath(os.path.join(directory, EXPERTS))
    if not os.path.isdir(target):
        raise FileNotFoundError(f"{target}: no trained experts (run the train stage first)")
    with ocp.StandardCheckpointer() as ckptr:
        # Read onto the host whatever the device count it was written on (orbax would otherwise
        # insist on the writer's topology): the trained rows are small, and every caller merges
        # them into the model where its own placement decides.
        saved = ckptr.metadata(target).item_metadata.tree
        on_host = jax.tree_util.tree_map(
            lambda m: np.broadcast_to(np.zeros((), m.dtype), tuple(m.shape)),
            saved,
            is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
        )
        tree = ckptr.restore(target, on_host)
    return from_checkpoint(tree["weights"], tree["slots"])


def apply_trained_experts(params: dict[str, Any], directory: str) -> dict[str, Any]:
    """Base params with the trained experts of ``directory`` merged in (in-process)."""
    return load_trained_experts(directory).merge(params)


# --- Resumable training state (checkpoints/) -----------------------------------------------------

LAYOUT_KEY = "expert_layout"  # a checkpoint's custom metadata: run -> slot table (nested lists)
_ORBAX = os.sep + "orbax" + os.sep
_NOT_DAMAGE = (errno.EACCES, errno.EPERM, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.ENOSPC)


class ResumeError(RiseError, RuntimeError):
    """An intact training checkpoint this run cannot continue from (it is kept); the message says
    what differs and how to go on."""


def open_checkpoints(directory: str) -> ocp.CheckpointManager:
    """The manager of a run's training checkpoints: the two newest kept, every save written
    synchronously (the loop waits for each save anyway; orbax's background writer would print a
    failure as tracebacks before the loop could report it)."""
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False),
    )


class _HoldBackOrbaxErrors(py_logging.Filter):
    def filter(self, record: py_logging.LogRecord) -> bool:
        if record.levelno < py_logging.ERROR:
            return True
        if record.name == "asyncio":  # orbax's failed futures, freed
            return "exception was never retrieved" not in record.getMessage()
        return _ORBAX not in record.pathname


class _DiskFullNoise(py_logging.Filter):
    """Drops the ERROR records about a full disk that orbax's writer threads and asyncio's freed
    futures log after a failed save has returned (the caller reported it as one line)."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        if record.levelno < py_logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not ((exc is not None and disk_full(exc)) or "No space left on device" in record.getMessage())


_DISK_FULL_NOISE = _DiskFullNoise()


def _hold_back_disk_full_noise() -> None:
    """Install :class:`_DiskFullNoise` on the loggers it serves (once; it stays: the late records
    come when the failed save's futures are freed, as late as interpreter exit)."""
    for name in ("absl", "asyncio"):
        logger = py_logging.getLogger(name)
        if _DISK_FULL_NOISE not in logger.filters:
            logger.addFilter(_DISK_FULL_NOISE)


@contextlib.contextmanager
def _orbax_errors_held_back() -> Iterator[None]:
    """Orbax's ERROR records dropped while it runs: it logs a failure with its traceback from every
    thread the failure passes through before raising it, and the caller reports the raised error."""
    loggers = [py_logging.getLogger(name) for name in ("absl", "asyncio")]
    held = _HoldBackOrbaxErrors()
    for logger in loggers:
        logger.addFilter(held)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(held)


def _causes(err: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an error it came from) is a full disk: ``OSError(ENOSPC)``, or
    tensorstore's ``RESOURCE_EXHAUSTED ... No space left on device`` that orbax raises."""
    for e in _causes(err):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        text = str(e)
        if "No space left on device" in text or "os_error_code='28'" in text:
            return True
    return False


def _not_damage(err: BaseException) -> bool:
    """Errors that say nothing about a checkpoint's files (permissions, memory, a full disk)."""
    return any(isinstance(e, MemoryError) or (isinstance(e, OSError) and e.errno in _NOT_DAMAGE) for e in _causes(err))


def _saved_steps(directory: str) -> list[int]:
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []


def _settle_orbax_threads(timeout: float = 60.0) -> None:
    """After a failed save: wait for orbax's writer threads still running (each logs the failure it
    meets) and collect their futures (asyncio logs an exception never retrieved when one is freed),
    so that this happens while the caller holds their logs back."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and type(thread).__module__.startswith("orbax"):
            thread.join(timeout)
    gc.collect()


def _no_space(step: int, directory: str, detail: str = "") -> OSError:
    done = [s for s in _saved_steps(directory) if s != step]
    resume = f"the checkpoint of micro-step {done[-1]}" if done else "the start"
    return OSError(
        errno.ENOSPC,
        f"no space left on device for the training checkpoint of micro-step {step} in {directory}{detail}; "
        f"free some space and rerun (training resumes from {resume})",
    )


def save_training_state(manager: ocp.CheckpointManager, step: int, state: Any, layout: dict[str, Any]) -> None:
    """Write ``state`` (a pytree of arrays) as checkpoint ``step`` with the trainable row
    ``layout`` it holds (run -> slot table ``[n, E]``) and wait until it is complete.

    A full disk is one ``OSError(ENOSPC)`` naming the directory and the checkpoint a rerun resumes
    from: raised before writing when the free space is below the state's size, else when orbax
    fails (its writer threads are waited for with their error logs held back, and the partial
    step directory is removed)."""
    directory = str(manager.directory)
    need = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree_util.tree_leaves(state))
    free = shutil.disk_usage(directory).free
    if free < need + (1 << 20):
        raise _no_space(step, directory, f" (it needs about {need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free)")
    custom = {LAYOUT_KEY: {run: np.asarray(t).tolist() for run, t in layout.items()}}
    full = False
    with _orbax_errors_held_back():
        try:
            manager.save(step, args=ocp.args.StandardSave(state), custom_metadata=custom)
            manager.wait_until_finished()
        except Exception as err:
            if not disk_full(err):
                raise
            full = True
        if full:
            _hold_back_disk_full_noise()
            _settle_orbax_threads()
    if full:
        for name in os.listdir(directory):  # orbax's partial step directory
            if name.startswith(f"{step}.") and "tmp" in name:
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
        raise _no_space(step, directory)


def _keys(path: tuple) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= 300 else text[:300] + " ..."


def restore_training_state(
    manager: ocp.CheckpointManager, target: Any, layout: dict[str, Any], where: str
) -> Any | None:
    """The newest usable checkpoint of ``manager`` restored as ``target`` (the fresh state, a pytree
    whose ``weights`` field holds the trainable rows: its arrays' shardings say where each restored
    leaf goes, ``layout`` (run -> slot table) how its rows are laid out); None when there is none.

    Any device count resumes: leaves are read onto ``target``'s shardings, and a checkpoint whose
    rows were laid out for another count has every row leaf (weights, optimiser moments, gradient
    sum; found by their path ending in a ``weights`` path) moved to ``layout``. A checkpoint whose
    files are damaged is deleted, with what was wrong in the log, and the one before it tried; an
    intact one this run cannot use raises :class:`ResumeError` and stays."""
    steps = sorted(manager.all_steps(), reverse=True)
    for step in steps:
        state = _restore_step(manager, step, target, layout, os.path.join(where, str(step)))
        if state is None:
            continue
        if step != steps[0]:
            logging.warning(f"resuming from an earlier checkpoint ({where}/{step}) than the newest ({steps[0]})")
        return state
    return None


def _delete_damaged(manager: ocp.CheckpointManager, step: int, where: str, err: BaseException, what: str) -> None:
    if _not_damage(err):
        raise err
    logging.warning(f"{where}: damaged training checkpoint ({what}: {_short(err)}); deleted")
    manager.delete(step)


def _moved_rows(
    saved_layout: dict[str, Any] | None, layout: dict[str, Any], where: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Run -> (rows now, rows saved) of the selected experts, for the runs laid out otherwise."""
    moved = {}
    for run, table in layout.items():
        table = np.asarray(table)
        if saved_layout is None or run not in saved_layout:
            continue
        old = np.asarray(saved_layout[run], np.int32)
        if np.array_equal(old, table):
            continue
        if old.shape != table.shape or not np.array_equal(old >= 0, table >= 0):
            raise ResumeError(
                f"{where}: the checkpoint trains other experts in {run} than this run's selection; rerun with "
                f"the selection it was written with, or delete {os.path.dirname(where)} to start over"
            )
        chosen = np.nonzero(table >= 0)
        moved[run] = (table[chosen], old[chosen])
    return moved


def _restore_step(manager: ocp.CheckpointManager, step: int, target: Any, layout: dict[str, Any], where: str):
    try:
        with _orbax_errors_held_back():
            meta = manager.item_metadata(step)
            custom = manager.metadata(step).custom_metadata or {}
        saved_tree = getattr(meta, "tree", meta)
        if saved_tree is None:
            raise FileNotFoundError("no array metadata")
        saved = {_keys(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(saved_tree)[0]}
    except Exception as err:  # noqa: BLE001 — orbax raises many kinds for damaged files
        _delete_damaged(manager, step, where, err, "its metadata cannot be read")
        return None
    flat, treedef = jax.tree_util.tree_flatten_with_path(target)
    paths = [_keys(p) for p, _ in flat]
    leaves = [leaf for _, leaf in flat]
    differ = sorted("/".join(p) for p in set(paths) ^ set(saved))
    if differ:
        raise ResumeError(
            f"{where}: the checkpoint holds another training state than this run's (e.g. {differ[:3]}): it was "
            f"written with another training method or optimiser; rerun with those settings, or delete "
            f"{os.path.dirname(where)} to start over"
        )
    saved_layout = custom.get(LAYOUT_KEY)
    moved = _moved_rows(saved_layout, layout, where)
    row_paths = sorted(
        ((_keys(p), _keys(p)[0]) for p, _ in jax.tree_util.tree_flatten_with_path(target.weights)[0]),
        key=lambda item: -len(item[0]),
    )
    plan: list[str | None] = []
    for path, leaf in zip(paths, leaves, strict=True):
        shape = tuple(saved[path].shape)
        run = next((r for rp, r in row_paths if path[-len(rp) :] == rp), None)
        if run in moved:
            ok = shape[1:] == tuple(leaf.shape[1:]) and shape[0] > int(moved[run][1].max())
        else:
            ok, run = shape == tuple(leaf.shape), None
        if not ok:
            hint = (
                " (it records no row layout: resume it on the device count it was written with)"
                if saved_layout is None
                else ""
            )
            raise ResumeError(
                f"{where}: {'/'.join(path)} is saved with shape {shape}, this run's is {tuple(leaf.shape)}{hint}; "
                f"delete {os.path.dirname(where)} to start over"
            )
        plan.append(run)

    def abstract(on_host: bool) -> Any:
        out = []
        for path, leaf, run in zip(paths, leaves, plan, strict=True):
            if run is not None or on_host or not isinstance(leaf, jax.Array):  # read to host memory
                out.append(np.broadcast_to(np.zeros((), leaf.dtype), tuple(saved[path].shape)))
            else:  # straight onto this run's placement
                out.append(jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding))
        return jax.tree_util.tree_unflatten(treedef, out)

    restored = None
    for on_host in (False, True):  # on host: placed below (also tells a damaged file from a placement failure)
        try:
            with _orbax_errors_held_back():
                restored = manager.restore(step, args=ocp.args.StandardRestore(abstract(on_host)))
            break
        except Exception as err:  # noqa: BLE001
            if on_host:
                _delete_damaged(manager, step, where, err, "its arrays cannot be read")
                return None
    values = treedef.flatten_up_to(restored)
    out = []
    for leaf, value, run in zip(leaves, values, plan, strict=True):
        if run is not None:
            now, before = moved[run]
            value = np.asarray(value)
            rows = np.zeros(leaf.shape, value.dtype)
            rows[now] = value[before]
            value = rows
        if isinstance(leaf, jax.Array) and not isinstance(value, jax.Array):
            value = jax.device_put(value, leaf.sharding)
        out.append(value)
    if moved:
        logging.info(f"{where}: trainable rows saved in another layout (another device count) moved to this run's")
    return jax.tree_util.tree_unflatten(treedef, out)
