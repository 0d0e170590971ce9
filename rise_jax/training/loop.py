"""The training loop: shuffled epochs, accumulation, held-out loss, metrics, checkpoints, resume.

Guarantees:

* Gradient accumulation as HF's Trainer: an optimiser step every ``grad_accum`` micro-batches
  and at the end of each epoch; the update uses the mean of the accumulated gradients.
* Resumable and exact: one :class:`TrainState` pytree — the micro-step counter, trainable
  weights, optimiser state and the gradient accumulator — is saved and restored by one orbax call
  (``checkpoints/``, keyed by micro-step); data order
  depends only on (seed, epoch) and the router rng on the micro-step, so a resumed run ends
  bitwise where an uninterrupted one would (on CPU, on the same devices).
* Resumable on another device count: the state is read onto this run's shardings and its
  trainable rows moved to this run's layout (:func:`~rise_jax.training.artefacts.restore_training_state`);
  the step counter goes on from the checkpoint. Only damaged checkpoints are deleted (logged with
  what was wrong); an intact one the run cannot use stops it (``ResumeError``) and is kept.
* A full disk (or another OSError) while writing a checkpoint, ``metrics.jsonl`` or the
  TensorBoard events ends the run with one ``OSError`` naming the file and the checkpoint a rerun
  resumes from — no traceback from orbax's or tensorboardX's writer threads.
* SIGTERM / SIGINT: the current step finishes, a checkpoint is written, the loop returns
  ``status = "interrupted"``.
* A non-finite loss stops the run with :class:`TrainingError`; the update is discarded and the
  last good state is checkpointed.
* Metrics: ``metrics.jsonl`` (one JSON object per logged step: step, opt_step, epoch, loss,
  grad_norm, lr, tokens, tokens_per_s; held-out entries carry ``held_out_loss``) and TensorBoard
  event files in ``tensorboard/`` (tensorboardX).
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import threading
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rise_jax.distributed import is_writer, put_batch, replicate_local
from rise_jax.errors import RiseError
from rise_jax.io_utils import write_text_atomic
from rise_jax.models.transformer import MoEModel
from rise_jax.training.alignment import Alignment
from rise_jax.training.artefacts import (
    CHECKPOINTS,
    METRICS,
    TENSORBOARD,
    disk_full,
    open_checkpoints,
    restore_training_state,
    save_training_state,
)
from rise_jax.training.data import MicroBatches, TrainingSet, pad_references
from rise_jax.training.methods.base import TrainingMethod
from rise_jax.training.options import TrainOptions
from rise_jax.training.step import make_steps


class TrainingError(RiseError, RuntimeError):
    """Training cannot continue (non-finite loss); the message says where the last good state is."""


class TrainState(NamedTuple):
    """Everything a resumed run needs, as one pytree.

    ``step``: micro-steps done; ``weights``: the training method's ``weights``;
    ``opt_state``: the optimiser state over them; ``grad_sum``: the gradient sum of the ``n_acc``
    micro-batches since the last update (None in memory when ``n_acc`` is 0 — with
    ``grad_accum = 1`` a zero-filled buffer would sit beside the next step's gradients — and
    zeros on disk)."""

    step: Any
    weights: Any
    opt_state: Any
    grad_sum: Any
    n_acc: Any

    def for_disk(self) -> TrainState:
        zeros = jax.tree_util.tree_map(jnp.zeros_like, self.weights) if self.grad_sum is None else self.grad_sum
        return self._replace(
            step=np.asarray(self.step, np.int32), grad_sum=zeros, n_acc=np.asarray(self.n_acc, np.int32)
        )

    @classmethod
    def from_disk(cls, restored: TrainState) -> TrainState:
        n_acc = int(restored.n_acc)
        return restored._replace(step=int(restored.step), n_acc=n_acc, grad_sum=restored.grad_sum if n_acc else None)


def _held_out_loss(eval_step, trainable: TrainingMethod, base, held: TrainingSet, opts: TrainOptions) -> float:
    total, count = 0.0, 0.0
    for ids, att, loss in MicroBatches.of(
        held, opts.batch_size, opts.bucket_multiple, opts.pad_id, opts.pack
    ).in_order():
        s, c = eval_step(trainable, base, *put_batch(base, ids, att, loss))
        total, count = total + float(s), count + float(c)
    return total / max(count, 1.0)


class _NoBoard:
    """The TensorBoard writer of a process that is not the writer: takes scalars, writes nothing."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs

    def close(self) -> None:
        pass


class _StopFlag:
    """Records SIGTERM/SIGINT instead of dying mid-step; restores the old handlers on exit."""

    def __init__(self):
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _drop_rows_after(metrics_path: str, step: int) -> None:
    """Keep the metric rows of micro-steps ``<= step`` (those past a resumed checkpoint are redone)."""
    if not os.path.isfile(metrics_path):
        return
    with open(metrics_path, encoding="utf-8") as fh:
        lines = fh.readlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):  # a row cut short by a kill: dropped
            continue
    if len(kept) != len(lines):
        write_text_atomic(metrics_path, "".join(kept))


def _write_row(fh, entry: dict[str, Any]) -> None:
    """One ``metrics.jsonl`` row, flushed (a kill loses at most the row being written)."""
    fh.write(json.dumps(entry) + "\n")
    fh.flush()


class _WriterThreadErrors:
    """While training: an OSError that ends tensorboardX's event-writer thread (a full disk) is
    kept in :attr:`error` instead of printed as a traceback; the loop raises it as one clean error.
    Other threads' exceptions go to the previous hook."""

    def __init__(self):
        self.error: OSError | None = None

    def __enter__(self):
        self._old = threading.excepthook
        threading.excepthook = self._hook
        return self

    def _hook(self, args) -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__module__.startswith("tensorboardX"):
            self.error = args.exc_value
            return
        self._old(args)

    def __exit__(self, *exc):
        threading.excepthook = self._old


def _write_failed(err: OSError, path: str, resume: int | None) -> OSError:
    """``err`` (writing ``path``) as one line that says what a rerun does."""
    what = "no space left on device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    where = f"the checkpoint of micro-step {resume}" if resume else "the start"
    return OSError(err.errno, f"{what} while writing {path}; free some space and rerun (training resumes from {where})")


def train(
    model: MoEModel,
    base_params: Any,
    trainable: TrainingMethod,
    train_set: TrainingSet,
    held_set: TrainingSet | None,
    opts: TrainOptions,
    out_dir: str,
    align: Alignment | None = None,
) -> dict[str, Any]:
    """Train ``trainable``'s weights (a training method, :mod:`rise_jax.training.methods`);
    returns a summary (also the trained method under ``"trainable"``). Resumes from
    ``<out_dir>/checkpoints`` when it holds a checkpoint. ``align``: add the routing-alignment
    term (:mod:`rise_jax.training.alignment`) over ``train_set.refs``; the logged ``loss`` is then
    the whole objective, the held-out loss the NLL alone."""
    if align is not None and train_set.refs is None:
        raise TrainingError("routing alignment needs the training set's parallel reference text (refs)")
    os.makedirs(out_dir, exist_ok=True)
    weights = trainable.weights
    if not train_set.ids:
        raise TrainingError("no training sequences")
    batches = MicroBatches.of(train_set, opts.batch_size, opts.bucket_multiple, opts.pad_id, opts.pack)
    per_epoch = batches.per_epoch()
    total_micro = opts.epochs * per_epoch
    opt_per_epoch = math.ceil(per_epoch / opts.grad_accum)
    total_opt = opts.epochs * opt_per_epoch
    tx, schedule = trainable.optimizer(opts, total_opt)
    grad_step, apply_step, eval_step = make_steps(model, tx, align)
    state = TrainState(0, weights, replicate_local(tx.init(weights), weights), None, 0)

    ckpt_dir = os.path.join(out_dir, CHECKPOINTS)
    manager = open_checkpoints(ckpt_dir)
    # The trainable row layout (owner-grouped on an expert-parallel mesh): saved with each
    # checkpoint, so that another device count can move the rows to its own layout on resume.
    layout = {run: table for run, (table, _) in trainable.expert_tables().items()}
    try:
        restored = restore_training_state(manager, state.for_disk(), layout, ckpt_dir)
    except BaseException:
        manager.close()
        raise
    if restored is not None:
        state = TrainState.from_disk(restored)
    del restored
    start = state.step
    weights, opt_state, grad_acc, n_acc = state.weights, state.opt_state, state.grad_sum, state.n_acc
    del state

    def save(step: int) -> None:
        if manager.latest_step() != step:
            state = TrainState(step, weights, opt_state, grad_acc, n_acc)
            save_training_state(manager, step, state.for_disk(), layout)

    from tensorboardX import SummaryWriter

    tb_dir = os.path.join(out_dir, TENSORBOARD)
    writer = is_writer()  # in a multi-process job, process 0 writes the metrics (rise_jax.distributed)
    tb = SummaryWriter(tb_dir) if writer else _NoBoard()
    metrics_path = os.path.join(out_dir, METRICS)
    if writer:
        _drop_rows_after(metrics_path, start)  # steps past the checkpoint are redone: no duplicate rows
    status, last_loss, held_loss, steps_done = "completed", None, None, start
    base_key = jax.random.PRNGKey(opts.seed)
    epoch_cache: dict[int, list[np.ndarray]] = {}
    t0, tokens_seen = time.perf_counter(), 0
    bar = tqdm(total=total_micro, initial=start, desc="training", unit="step", disable=not (opts.progress and writer))
    log = open(metrics_path if writer else os.devnull, "a", encoding="utf-8")  # noqa: SIM115 — closed below
    with _WriterThreadErrors() as writer_errors:
        try:
            with _StopFlag() as stop:

                def record(entry: dict[str, Any]) -> None:
                    if writer_errors.error is not None:  # TensorBoard's writer thread died (full disk)
                        raise _write_failed(writer_errors.error, tb_dir, manager.latest_step())
                    try:
                        _write_row(log, entry)
                    except OSError as err:
                        raise _write_failed(err, metrics_path, manager.latest_step()) from None
                    for k, v in entry.items():
                        if k not in ("step", "epoch", "opt_step") and isinstance(v, (int, float)):
                            tb.add_scalar(f"train/{k}" if k != "held_out_loss" else "eval/loss", v, entry["step"])

                # Resumed at or past max_steps: stop again without a step (a rerun never creeps on).
                end = start if opts.max_steps and opts.max_steps <= start < total_micro else total_micro
                if end == start < total_micro:
                    status = "stopped at max_steps"
                for m in range(start, end):
                    epoch, b = divmod(m, per_epoch)
                    if epoch not in epoch_cache:
                        epoch_cache = {epoch: batches.epoch(opts.seed, epoch)}
                    ids, att, loss_mask = batches.batch(epoch_cache[epoch][b])
                    rng = jax.random.fold_in(base_key, m)
                    ref = None
                    if align is not None:  # each row's translation, row for row
                        ref = put_batch(
                            base_params,
                            *pad_references(
                                train_set, epoch_cache[epoch][b], opts.batch_size, opts.bucket_multiple, opts.pad_id
                            ),
                        )
                    loss_a, count, grads = grad_step(
                        trainable.replace(weights=weights),
                        base_params,
                        *put_batch(base_params, ids, att, loss_mask),
                        rng,
                        ref,
                    )
                    loss = float(loss_a)
                    if not math.isfinite(loss):
                        save(m)
                        raise TrainingError(
                            f"non-finite loss ({loss}) at micro-step {m + 1} (epoch {epoch}); the update was discarded "
                            f"and the last good state (micro-step {m}) is checkpointed in {os.path.join(out_dir, CHECKPOINTS)}. "
                            "Lower the learning rate or check the data."
                        )
                    # No zero-filled sum is held between updates: with grad_accum = 1 that buffer would
                    # sit beside the next step's gradients (K experts' worth of fp32).
                    grad_acc = grads if grad_acc is None else jax.tree_util.tree_map(jnp.add, grad_acc, grads)
                    n_acc += 1
                    at_opt_step = (b + 1) % opts.grad_accum == 0 or b == per_epoch - 1
                    grad_norm = None
                    if at_opt_step:
                        weights, opt_state, gn = apply_step(weights, opt_state, grad_acc, jnp.float32(n_acc))
                        grad_norm = float(gn)
                        grad_acc = None  # donated to the update
                        n_acc = 0
                    last_loss = loss
                    done = steps_done = m + 1
                    opt_step = epoch * opt_per_epoch + math.ceil((b + 1) / opts.grad_accum) if at_opt_step else None
                    tokens_seen += int(np.count_nonzero(att))  # real tokens (att: segment ids when packed)
                    tps = tokens_seen / max(time.perf_counter() - t0, 1e-9)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", tokens_per_s=f"{tps:.0f}")
                    if opts.log_every and done % opts.log_every == 0:
                        entry = {
                            "step": done,
                            "epoch": epoch,
                            "loss": loss,
                            "tokens": float(count),
                            "tokens_per_s": tps,
                        }
                        if opt_step is not None:
                            entry.update(opt_step=opt_step, grad_norm=grad_norm, lr=float(schedule(opt_step - 1)))
                        record(entry)
                    if held_set and opts.eval_every and opt_step and opt_step % opts.eval_every == 0:
                        held_loss = _held_out_loss(
                            eval_step, trainable.replace(weights=weights), base_params, held_set, opts
                        )
                        record({"step": done, "opt_step": opt_step, "held_out_loss": held_loss})
                    if opts.save_every and done % opts.save_every == 0:
                        save(done)
                    if stop.signal is not None:
                        save(done)
                        status = f"interrupted by signal {stop.signal}"
                        break
                    if opts.max_steps and done >= opts.max_steps and done < total_micro:
                        save(done)
                        status = "stopped at max_steps"
                        break
                else:
                    if end == total_micro:  # ran to the end (not resumed at max_steps)
                        save(total_micro)
                        if held_set:
                            held_loss = _held_out_loss(
                                eval_step, trainable.replace(weights=weights), base_params, held_set, opts
                            )
                            record({"step": total_micro, "opt_step": total_opt, "held_out_loss": held_loss})
        except BaseException as err:
            bar.close()
            for close in (log.close, tb.close, manager.close):  # the error in flight is the one reported
                try:
                    close()
                except Exception:  # noqa: BLE001, S110 — e.g. the same full disk again
                    pass
            if isinstance(err, Exception) and not isinstance(err, OSError) and disk_full(err):
                # e.g. orbax's RESOURCE_EXHAUSTED from a write it finished late: one line, not its spec
                raise _write_failed(
                    OSError(errno.ENOSPC, "no space left on device"), out_dir, manager.latest_step()
                ) from None
            raise
        bar.close()
        resume = manager.latest_step()
        try:
            for close, path in ((log.close, metrics_path), (tb.close, tb_dir)):
                try:
                    close()
                except OSError as err:
                    raise _write_failed(err, path, resume) from None
            if writer_errors.error is not None:
                raise _write_failed(writer_errors.error, tb_dir, resume)
        finally:
            manager.close()
    return {
        "status": status,
        "micro_steps": total_micro,
        "optimizer_steps": total_opt,
        "steps_done": steps_done,
        "final_loss": last_loss,
        "held_out_loss": held_loss,
        "trainable": trainable.replace(weights=weights),
    }
