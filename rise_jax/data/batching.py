"""Tokenisation with counted truncation, and length-bucketed padded batches."""

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
