"""Batched decoding with a KV cache, compiled end to end (prefill + ``lax.while_loop`` on device).

Greedy decoding equals HF ``generate(do_sample=False)`` token for token: prompts are left-padded,
positions are ``cumsum(mask) - 1`` (HF's convention for generation), finished rows are fed the pad
token and the loop stops when every row has emitted a stop token or ``max_new_tokens`` is reached.
Sampling applies temperature, then nucleus (top-p) filtering as HF's ``TopPLogitsWarper``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rise_jax.distributed import put_batch, to_host
from rise_jax.errors import RiseError
from rise_jax.models.routers import RouterEdit
from rise_jax.models.transformer import MoEModel, init_kv_cache

Array = jax.Array


class GenerationError(RiseError, ValueError):
    """Prompts or options that cannot be decoded (the message says which)."""


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    """``temperature = 0`` is greedy decoding; otherwise sample with ``top_p`` nucleus filtering."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise GenerationError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")


def top_p_filter(logits: Array, top_p: float | Array) -> Array:
    """Keep the smallest set of tokens whose probability mass reaches ``top_p`` (at least one)."""
    probs = jax.nn.softmax(logits, axis=-1)
    sorted_probs = jnp.sort(probs, axis=-1)[..., ::-1]
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    kept = mass_before < top_p
    threshold = jnp.min(jnp.where(kept, sorted_probs, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(probs >= threshold, logits, -jnp.inf)


def _choose(logits: Array, rng: Array, temperature: Array, top_p: Array, sample: bool) -> Array:
    if not sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = top_p_filter(logits / temperature, top_p)
    return jax.random.categorical(rng, scaled, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "sample"))
def _decode(
    model: MoEModel,
    params: dict[str, Any],
    ids: Array,
    mask: Array,
    stop_ids: Array,
    pad_id: Array,
    rng: Array,
    temperature: Array,
    top_p: Array,
    router_edit: RouterEdit | None,
    *,
    max_new_tokens: int,
    sample: bool,
) -> tuple[Array, Array]:
    b, p = ids.shape
    cache = init_kv_cache(model.cfg, b, p + max_new_tokens, model.opts.dtype)
    full_mask = jnp.concatenate([mask, jnp.ones((b, max_new_tokens), mask.dtype)], axis=1)
    positions = jnp.where(mask > 0, jnp.cumsum(mask, axis=1) - 1, 1).astype(jnp.int32)

    def run(tokens: Array, pos: Array, cache):
        out = model.apply(
            {"params": params},
            tokens,
            full_mask,
            pos,
            kv_cache=cache,
            router_edit=router_edit,
            last_token_logits=True,
        )
        return out.logits[:, -1].astype(jnp.float32), out.kv_cache

    logits, cache = run(ids, positions, cache)
    rng, sub = jax.random.split(rng)
    first = _choose(logits, sub, temperature, top_p, sample)
    out_tokens = jnp.full((b, max_new_tokens), pad_id, jnp.int32)
    state = (jnp.int32(0), out_tokens, first, positions[:, -1] + 1, cache, jnp.zeros((b,), bool), rng)

    def cond(state):
        i, _, _, _, _, done, _ = state
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(state):
        i, out_tokens, cur, pos, cache, done, rng = state
        tok = jnp.where(done, pad_id, cur)
        out_tokens = jax.lax.dynamic_update_slice(out_tokens, tok[:, None], (0, i))
        done = done | jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
        logits, cache = run(tok[:, None], pos[:, None], cache)
        rng, sub = jax.random.split(rng)
        nxt = _choose(logits, sub, temperature, top_p, sample)
        return i + 1, out_tokens, nxt, pos + 1, cache, done, rng

    steps, out_tokens, *_ = jax.lax.while_loop(cond, body, state)
    return out_tokens, steps


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, mask)`` ``[B, P]`` with every sequence right-aligned; ``P`` rounded up to ``multiple``."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise GenerationError("every prompt must hold at least one token")
    longest = max(len(s) for s in sequences)
    p = -(-longest // multiple) * multiple
    ids = np.full((len(sequences), p), pad_id, np.int32)
    mask = np.zeros((len(sequences), p), np.int32)
    for row, seq in enumerate(sequences):
        ids[row, p - len(seq) :] = seq
        mask[row, p - len(seq) :] = 1
    return ids, mask


def generate(
    model: MoEModel,
    params: dict[str, Any],
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    sampling: SamplingOptions = SamplingOptions(),
    router_edit: RouterEdit | None = None,
) -> list[list[int]]:
    """Decode a left-padded batch; returns each row's new tokens up to and including its stop token."""
    input_ids, attention_mask = np.asarray(input_ids), np.asarray(attention_mask)
    if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
        raise GenerationError(f"input_ids {input_ids.shape} and attention_mask {attention_mask.shape} must be [B, P]")
    if not np.all(attention_mask[:, -1] == 1):
        raise GenerationError("prompts must be left-padded (attention_mask[:, -1] == 1 for every row)")
    if max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    stops = np.asarray(sorted(set(int(s) for s in stop_ids)) or [-1], np.int32)
    tokens, steps = _decode(
        model,
        params,
        *put_batch(params, input_ids.astype(np.int32), attention_mask.astype(np.int32)),
        jnp.asarray(stops),
        jnp.int32(pad_id),
        jax.random.PRNGKey(sampling.seed),
        jnp.float32(max(sampling.temperature, 1e-6)),
        jnp.float32(sampling.top_p),
        router_edit,
        max_new_tokens=max_new_tokens,
        sample=sampling.temperature > 0,
    )
    tokens = to_host(tokens)[:, : int(to_host(steps))]
    stop_set = set(stops.tolist())
    out = []
    for row in tokens:
        seq = []
        for tok in row.tolist():
            seq.append(tok)
            if tok in stop_set:
                break
        out.append(seq)
    return out


def stop_token_ids(tokenizer, generation_config: dict[str, Any] | None = None) -> list[int]:
    """Stop tokens: the tokenizer's EOS plus ``eos_token_id`` of ``generation_config.json`` (HF
    checkpoints list the chat end-of-turn tokens there, e.g. Qwen3's ``<|im_end|>``)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = (generation_config or {}).get("eos_token_id")
    if eos is not None:
        ids.update(int(e) for e in (eos if isinstance(eos, list) else [eos]))
    vocab = tokenizer.get_vocab()
    ids.update(int(vocab[t]) for t in ("<|im_end|>", "<|end|>", "<|endoftext|>") if t in vocab)
    return sorted(ids)


def generate_text(
    model: MoEModel,
    params: dict[str, Any],
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    batch_size: int = 8,
    pad_multiple: int = 32,
    sampling: SamplingOptions = SamplingOptions(),
    router_edit: RouterEdit | None = None,
    progress: Any = None,
) -> list[str]:
    """Generate for rendered prompt strings (chat template already applied), in batches of
    ``batch_size`` (the last batch is filled with copies so every batch has one shape)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    stop_set = set(int(s) for s in stop_ids)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        rows = [encoded[i] for i in chunk] + [encoded[chunk[0]]] * (batch_size - len(chunk))
        ids, mask = left_pad(rows, pad_id, pad_multiple)
        new = generate(
            model,
            params,
            ids,
            mask,
            max_new_tokens=max_new_tokens,
            stop_ids=stop_ids,
            pad_id=pad_id,
            sampling=sampling,
            router_edit=router_edit,
        )
        for i, toks in zip(chunk, new, strict=False):
            results[i] = tokenizer.decode([t for t in toks if t not in stop_set], skip_special_tokens=True)
        if progress is not None:
            progress.update(len(chunk))
    return [results[i] for i in range(len(encoded))]
