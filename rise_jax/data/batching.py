"""Tokenisation with counted truncation, length-bucketed padded batches, and packed batches
(several sequences per row, told apart by segment ids: the packing convention)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from rise_jax.data.sources import Example

TEMPLATES = ("raw", "chat")


@dataclasses.dataclass
class TokenizedCorpus:
    """One language's token sequences. ``truncated`` counts sequences cut to ``max_length``."""

    language: str
    sequences: list[np.ndarray]
    example_ids: list[str]
    truncated: int
    available: int  # examples in the source before max_samples

    @property
    def num_tokens(self) -> int:
        return int(sum(len(s) for s in self.sequences))


def render(example: Example, tokenizer, template: str) -> str:
    """The text fed to the model: raw, or through the tokenizer's chat template (user turn =
    the prompt, assistant turn = the answer when the example has one and it is wanted)."""
    if template == "raw":
        return example.text
    if template != "chat":
        raise ValueError(f"unknown template {template!r}; choose one of {TEMPLATES}")
    messages = [{"role": "user", "content": example.prompt or example.text}]
    if example.prompt is not None and example.answer is not None and example.text != example.prompt:
        messages.append({"role": "assistant", "content": example.answer})
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=len(messages) == 1, enable_thinking=False
    )


def tokenize_examples(
    language: str,
    examples: Sequence[Example],
    tokenizer,
    max_length: int,
    max_samples: int | None = None,
    template: str = "raw",
) -> TokenizedCorpus:
    """Tokenise the first ``max_samples`` examples; sequences longer than ``max_length`` are cut and counted."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    chosen = list(examples[:max_samples] if max_samples else examples)
    texts = [render(e, tokenizer, template) for e in chosen]
    encoded = tokenizer(texts, add_special_tokens=(template == "raw"))["input_ids"]
    seqs, ids, truncated = [], [], 0
    for ex, toks in zip(chosen, encoded, strict=True):
        if not toks:
            continue
        if len(toks) > max_length:
            truncated += 1
            toks = toks[:max_length]
        seqs.append(np.asarray(toks, np.int32))
        ids.append(ex.id)
    return TokenizedCorpus(language, seqs, ids, truncated, len(examples))


def bucketed_batches(
    sequences: Sequence[np.ndarray], batch_size: int, bucket_multiple: int = 32, pad_id: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(input_ids [B, T], attention_mask [B, T], index [B])`` with right padding.

    Sequences are sorted by length so each batch holds similar lengths; ``T`` is the batch's
    longest sequence rounded up to ``bucket_multiple`` (few distinct shapes, few compilations).
    The last batch is filled with empty rows (mask 0, index -1) so ``B`` is always ``batch_size``.
    """
    order = sorted(range(len(sequences)), key=lambda i: (len(sequences[i]), i))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        longest = max(len(sequences[i]) for i in chunk)
        t = -(-longest // bucket_multiple) * bucket_multiple
        ids = np.full((batch_size, t), pad_id, np.int32)
        mask = np.zeros((batch_size, t), np.int32)
        index = np.full((batch_size,), -1, np.int64)
        for row, i in enumerate(chunk):
            s = sequences[i]
            ids[row, : len(s)] = s
            mask[row, : len(s)] = 1
            index[row] = i
        yield ids, mask, index


def row_length(lengths: Sequence[int], multiple: int) -> int:
    """The packed row length: the longest sequence rounded up to ``multiple`` (one compiled
    shape per corpus, and no packed row is longer than the corpus's longest padded batch)."""
    if not lengths:
        raise ValueError("no sequences to pack")
    return -(-max(lengths) // multiple) * multiple


def pack_rows(lengths: Sequence[int], length: int) -> list[list[int]]:
    """Pack sequences of ``lengths`` into rows of ``length`` tokens: best-fit decreasing (longest
    first, each into the open row with the least room that still holds it; ties to the row opened
    first), deterministic. Returns each row's sequence indices in placement order; rows in the
    order they were opened. Near-optimal for real length mixes (a long sequence, then shorter
    ones filling the rest), O(n log n) plus list insertions."""
    import bisect

    too_long = [i for i, n in enumerate(lengths) if n > length or n < 1]
    if too_long:
        i = too_long[0]
        raise ValueError(f"sequence {i} has {lengths[i]} tokens: cannot pack into rows of {length}")
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row), sorted
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at == len(free):
            rows.append([i])
            bisect.insort(free, (length - n, len(rows) - 1))
        else:
            room, row = free.pop(at)
            rows[row].append(i)
            bisect.insort(free, (room - n, row))
    return rows


def fill_rows(
    sequences: Sequence[np.ndarray], rows: Sequence[Sequence[int]], batch_size: int, length: int, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, segments)`` ``[batch_size, length]`` of packed ``rows`` (sequence indices
    per row): the row's sequences back to back, ``segments`` 1, 2, ... per sequence (the packing
    convention, :func:`rise_jax.models.layers.attention_visibility`), then padding (0); rows
    beyond ``len(rows)`` empty."""
    ids = np.full((batch_size, length), pad_id, np.int32)
    segments = np.zeros((batch_size, length), np.int32)
    for r, row in enumerate(rows):
        at = 0
        for s, i in enumerate(row):
            n = len(sequences[i])
            ids[r, at : at + n] = sequences[i]
            segments[r, at : at + n] = s + 1
            at += n
    return ids, segments


def packed_batches(
    sequences: Sequence[np.ndarray], batch_size: int, bucket_multiple: int = 32, pad_id: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(input_ids [B, R], segments [B, R], index [B, G])``: the sequences packed
    (:func:`pack_rows`) into rows of ``R`` = :func:`row_length` tokens, ``B = batch_size`` rows a
    batch (the last filled with empty rows). ``index[b, g]`` is the sequence in segment ``g + 1``
    of row ``b`` (-1: none); ``G`` is the most segments any row holds, rounded up to a power of
    two (one shape per corpus, a handful across corpora)."""
    lengths = [len(s) for s in sequences]
    length = row_length(lengths, bucket_multiple)
    rows = pack_rows(lengths, length)
    g = 1 << (max(len(r) for r in rows) - 1).bit_length()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        ids, segments = fill_rows(sequences, chunk, batch_size, length, pad_id)
        index = np.full((batch_size, g), -1, np.int64)
        for r, row in enumerate(chunk):
            index[r, : len(row)] = row
        yield ids, segments, index
