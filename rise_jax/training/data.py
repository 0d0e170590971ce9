"""Training sequences: tokens plus a loss mask (whole text, or completion only), and for the
routing-alignment objective each sequence's parallel reference-language text (``refs``); how they
become micro-batches (one sequence a row, or packed: several a row, told apart by segment ids)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from rise_jax.data.batching import pack_rows, render, row_length
from rise_jax.data.sources import Example
from rise_jax.errors import RiseError


class TrainingDataError(RiseError, ValueError):
    """Unusable training data (empty, no answers for completion-only training)."""


@dataclasses.dataclass
class TrainingSet:
    ids: list[np.ndarray]
    loss_masks: list[np.ndarray]
    truncated: int
    refs: list[np.ndarray] | None = None  # per sequence, its translation's tokens (routing alignment)

    @property
    def num_tokens(self) -> int:
        return int(sum(int(m.sum()) for m in self.loss_masks))

    def split(self, held_out: float, seed: int) -> tuple[TrainingSet, TrainingSet]:
        """(train, held-out): a seeded random ``held_out`` fraction (at least one sequence when > 0)."""
        n = len(self.ids)
        k = 0 if held_out <= 0 else max(1, round(n * held_out))
        if k >= n:
            raise TrainingDataError(f"held-out fraction {held_out} leaves no training sequences out of {n}")
        perm = np.random.default_rng(seed).permutation(n)

        def pick(idx) -> TrainingSet:
            refs = None if self.refs is None else [self.refs[i] for i in idx]
            return TrainingSet([self.ids[i] for i in idx], [self.loss_masks[i] for i in idx], 0, refs)

        train, held = pick(sorted(perm[k:])), pick(sorted(perm[:k]))
        train.truncated = self.truncated
        return train, held


def build_training_set(
    examples: Sequence[Example],
    tokenizer,
    max_length: int,
    template: str = "raw",
    completion_only: bool = False,
    max_samples: int | None = None,
    references: Sequence[Example] | None = None,
) -> TrainingSet:
    """Tokenise; sequences longer than ``max_length`` are cut (counted). With ``completion_only``
    the loss covers the answer tokens only (the prompt is context). ``references`` (one per
    example, e.g. its English translation) are tokenised the same way into ``refs``, kept in step
    with the sequences they belong to."""
    chosen = list(examples[:max_samples] if max_samples else examples)
    if not chosen:
        raise TrainingDataError("no training examples")
    if references is not None and len(references) < len(chosen):
        raise TrainingDataError(f"{len(chosen)} training examples but {len(references)} references")
    ids_out, masks, refs, truncated = [], [], [], 0
    special = template == "raw"
    for n_ex, ex in enumerate(chosen):
        if completion_only:
            if ex.prompt is None or ex.answer is None:
                raise TrainingDataError(
                    f"example {ex.id!r} has no prompt/answer: completion-only training needs QA/MGSM data"
                )
            full_ex = Example(ex.id, f"{ex.prompt}\n{ex.answer}", ex.prompt, ex.answer)
            prompt_text = render(Example(ex.id, ex.prompt, ex.prompt, None), tokenizer, template)
            if template == "raw":
                prompt_text += "\n"
            full_text = render(full_ex, tokenizer, template)
            prompt_ids = tokenizer(prompt_text, add_special_tokens=special)["input_ids"]
            ids = tokenizer(full_text, add_special_tokens=special)["input_ids"]
            mask = np.zeros(len(ids), np.int32)
            mask[min(len(prompt_ids), len(ids)) :] = 1
        else:
            ids = tokenizer(render(ex, tokenizer, template), add_special_tokens=special)["input_ids"]
            mask = np.ones(len(ids), np.int32)
        if len(ids) < 2:
            continue
        if len(ids) > max_length:
            truncated += 1
            ids, mask = ids[:max_length], mask[:max_length]
        if mask[1:].sum() == 0:
            continue
        ids_out.append(np.asarray(ids, np.int32))
        masks.append(mask)
        if references is not None:
            ref = tokenizer(render(references[n_ex], tokenizer, template), add_special_tokens=special)["input_ids"]
            refs.append(np.asarray(ref[:max_length], np.int32))
    if not ids_out:
        raise TrainingDataError("no usable training sequences (all empty, or answers truncated away)")
    return TrainingSet(ids_out, masks, truncated, refs if references is not None else None)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's shuffled batches of sequence indices (seeded by ``seed`` and ``epoch``)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def pad_batch(
    data: TrainingSet, index: Sequence[int], batch_size: int, multiple: int = 32, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, attention mask, loss mask) ``[batch_size, T]``, right-padded, empty rows to fill."""
    longest = max(len(data.ids[i]) for i in index)
    t = -(-longest // multiple) * multiple
    ids = np.full((batch_size, t), pad_id, np.int32)
    att = np.zeros((batch_size, t), np.int32)
    loss = np.zeros((batch_size, t), np.int32)
    for row, i in enumerate(index):
        n = len(data.ids[i])
        ids[row, :n], att[row, :n], loss[row, :n] = data.ids[i], 1, data.loss_masks[i]
    return ids, att, loss


def pad_references(
    data: TrainingSet, index: Sequence[int], batch_size: int, multiple: int = 32, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention mask) ``[batch_size, T]`` of the ``refs`` of the sequences ``index`` (row for
    row as :func:`pad_batch`), right-padded; empty rows to fill."""
    longest = max(max(len(data.refs[i]) for i in index), 1)
    t = -(-longest // multiple) * multiple
    ids = np.full((batch_size, t), pad_id, np.int32)
    att = np.zeros((batch_size, t), np.int32)
    for row, i in enumerate(index):
        n = len(data.refs[i])
        ids[row, :n], att[row, :n] = data.refs[i], 1
    return ids, att


@dataclasses.dataclass(frozen=True)
class MicroBatches:
    """A training set's micro-batches ``(ids, attention mask, loss mask)`` ``[batch_size, T]``.

    Unpacked (``rows`` None): a unit is one sequence; a micro-batch is ``batch_size`` of them,
    right-padded to the longest rounded up to ``multiple`` (:func:`pad_batch`).

    Packed: the sequences are packed once (:func:`~rise_jax.data.batching.pack_rows`, best-fit
    decreasing) into rows of ``length`` tokens (the longest sequence rounded up to ``multiple``:
    one compiled shape); a unit is one row, a micro-batch ``batch_size`` rows, so it holds as many
    sequences as fit (a different batch composition from the unpacked run, hence another loss
    curve). The attention mask holds segment ids (the packing convention: attention never crosses
    a sequence, positions restart) and the loss mask is 0 on every segment's first token, so each
    target is predicted within its own sequence and counted once: the per-token losses equal the
    unpacked ones, and the step's mean over the micro-batch's targets is the same normalisation.

    Each epoch shuffles the units (:func:`epoch_batches`: seeded by seed and epoch)."""

    data: TrainingSet
    batch_size: int
    multiple: int = 32
    pad_id: int = 0
    rows: tuple[tuple[int, ...], ...] | None = None
    length: int = 0

    @classmethod
    def of(cls, data: TrainingSet, batch_size: int, multiple: int, pad_id: int, pack: bool) -> MicroBatches:
        if not pack:
            return cls(data, batch_size, multiple, pad_id)
        length = row_length([len(s) for s in data.ids], multiple)
        rows = tuple(tuple(r) for r in pack_rows([len(s) for s in data.ids], length))
        return cls(data, batch_size, multiple, pad_id, rows, length)

    @property
    def units(self) -> int:
        """Sequences (unpacked) or packed rows: what an epoch shuffles."""
        return len(self.data.ids) if self.rows is None else len(self.rows)

    def per_epoch(self) -> int:
        return -(-self.units // self.batch_size)

    def epoch(self, seed: int, epoch: int) -> list[np.ndarray]:
        """The epoch's micro-batches of unit indices."""
        return epoch_batches(self.units, self.batch_size, seed, epoch)

    def batch(self, index: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, attention mask or segment ids, loss mask) of the units ``index``."""
        if self.rows is None:
            return pad_batch(self.data, index, self.batch_size, self.multiple, self.pad_id)
        ids = np.full((self.batch_size, self.length), self.pad_id, np.int32)
        seg = np.zeros((self.batch_size, self.length), np.int32)
        loss = np.zeros((self.batch_size, self.length), np.int32)
        for r, unit in enumerate(index):
            at = 0
            for g, i in enumerate(self.rows[unit]):
                n = len(self.data.ids[i])
                ids[r, at : at + n], seg[r, at : at + n] = self.data.ids[i], g + 1
                loss[r, at + 1 : at + n] = self.data.loss_masks[i][1:]  # a first token is never a target
                at += n
        return ids, seg, loss

    def in_order(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Unshuffled micro-batches (held-out evaluation)."""
        for start in range(0, self.units, self.batch_size):
            yield self.batch(range(start, min(start + self.batch_size, self.units)))
