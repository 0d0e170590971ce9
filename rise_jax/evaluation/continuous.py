"""Continuous-batching decoding: a fixed set of decode slots, each refilled with the next prompt
as soon as its row stops, so a batch never waits for its longest answer.

Why: :func:`~rise_jax.evaluation.generate.generate_text` decodes static batches until the *last*
row stops; on chain-of-thought evaluation (MGSM) most rows sit idle fed pad tokens while one
answer runs on. Here every slot has its own position, its own attention-mask row and its own
stretch of the shared KV cache; a finished slot's row is refilled with the next prompt's prefill.

How, with the model's cache as it is (one write column ``index`` shared by every row):

* The cache has ``S`` columns. Every decode step writes all slots' new keys/values at the shared
  column ``c`` (then ``c + 1``); positions are passed per slot (rope), and each slot's mask row
  is 1 only on its own tokens, which are contiguous, so causal and sliding-window visibility by
  column equal visibility by position.
* A refill prefills the new prompts (left-padded to a bucket of ``pad_multiple`` tokens, the
  rows padded to a power of two: bounded compilation) on a fresh cache and copies their
  keys/values into the slots' rows at columns ``[c - P, c)``; that row's mask is reset to them.
  Linear-attention layers' fixed-size states (``KVCache.conv`` / ``recurrent``) replace the
  slot's row whole; shifting columns leaves them as they are.
* No live row spans more than ``W = longest prompt bucket + max_new_tokens`` columns, so when
  ``c`` reaches ``S`` the cache and masks are shifted left by ``K = S - W`` columns (one copy
  every ``K`` steps; :func:`cache_columns`) and decoding goes on at ``c = W``.
* The decode loop runs on device (``lax.while_loop``) until a slot finishes while prompts wait
  (or, once none wait, until every slot has), or the cache needs shifting; the host then takes
  the finished rows' tokens and refills their slots.

Greedy output equals the static batches' token for token (same prefill positions, same decode
positions, masked columns contribute exact zeros); only float reassociation from different
array shapes differs, as it already does between static batches of different composition.
Multi-process: host arrays enter through :func:`~rise_jax.distributed.put_batch` and leave
through :func:`~rise_jax.distributed.to_host`; every process takes the same decisions from the
same gathered values.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rise_jax.distributed import put_batch, to_host
from rise_jax.evaluation.generate import GenerationError, SamplingOptions, _choose, left_pad
from rise_jax.models.routers import RouterEdit
from rise_jax.models.transformer import KVCache, MoEModel, init_kv_cache

Array = jax.Array

CACHE_BUDGET_BYTES = 2 << 30  # KV cache the default slot count may fill (all slots together)
MAX_DEFAULT_SLOTS = 16
MAX_PREFILL_ROWS = 8  # prompts prefilled in one call (bounds prefill activations and compilations)
GREEDY = SamplingOptions()


class SlotState(NamedTuple):
    """Device state of the decode slots (``B`` slots, ``S`` cache columns, ``N`` max new tokens).

    ``cache`` the KV cache (its ``index`` unused: the write column is passed per call); ``mask``
    int32 ``[B, S]`` each slot's own columns; ``cur`` int32 ``[B]`` the next token to feed (the
    last one chosen); ``pos`` int32 ``[B]`` its position; ``out`` int32 ``[B, N]`` the tokens
    chosen so far, ``count`` int32 ``[B]`` how many; ``done`` bool ``[B]`` the row stopped (or the
    slot is empty); ``rng`` the sampling key."""

    cache: KVCache
    mask: Array
    cur: Array
    pos: Array
    out: Array
    count: Array
    done: Array
    rng: Array


def cache_bytes_per_slot(model: MoEModel, columns: int) -> int:
    """Bytes of cache one slot of ``columns`` columns holds (every layer: keys and values, and the
    fixed-size states of linear-attention layers)."""
    shapes = jax.eval_shape(lambda: init_kv_cache(model.cfg, 1, columns, model.opts.dtype))
    held = (shapes.keys, shapes.values, shapes.conv, shapes.recurrent)
    return sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree_util.tree_leaves(held))


def default_slots(model: MoEModel, columns: int, budget_bytes: int = CACHE_BUDGET_BYTES) -> int:
    """Slots whose KV caches of ``columns`` columns fit ``budget_bytes`` together, at most
    ``MAX_DEFAULT_SLOTS`` and at least 1: the memory bound scales with the model's cache size."""
    return int(max(1, min(MAX_DEFAULT_SLOTS, budget_bytes // max(1, cache_bytes_per_slot(model, columns)))))


def cache_columns(longest_prompt: int, max_new_tokens: int, pad_multiple: int) -> tuple[int, int]:
    """``(W, S)``: the most columns a live row spans (its prompt bucket + ``max_new_tokens``) and
    the cache length ``W + K``. Every step's attention reads the ``K`` spare columns and every
    ``K`` steps the cache (``S`` columns) is copied once, so ``K ≈ sqrt(2 W)`` (a multiple of 16)
    keeps the sum of both smallest."""
    bucket = -(-longest_prompt // pad_multiple) * pad_multiple
    span = bucket + max_new_tokens
    spare = max(16, -(-math.isqrt(2 * span) // 16) * 16)
    return span, span + spare


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@functools.partial(jax.jit, static_argnames=("model",))
def _init_state(model: MoEModel, mask: Array, cur: Array, out: Array, done: Array, rng: Array) -> SlotState:
    """Empty slots; the row arrays come from the host (:func:`put_batch`), so the state lives
    where the params do and the cache, made here, follows them."""
    slots, columns = mask.shape
    return SlotState(init_kv_cache(model.cfg, slots, columns, model.opts.dtype), mask, cur, cur, out, cur, done, rng)


def _record(state: SlotState, chosen: Array, live: Array, stop_ids: Array, max_new_tokens: int) -> SlotState:
    """Append ``chosen`` to the rows ``live`` marks; they stop on a stop token or at the limit."""
    rows = jnp.arange(chosen.shape[0])
    out = state.out.at[rows, jnp.where(live, state.count, max_new_tokens)].set(chosen, mode="drop")
    count = state.count + live.astype(jnp.int32)
    stopped = jnp.any(chosen[:, None] == stop_ids[None, :], axis=-1) | (count >= max_new_tokens)
    done = state.done | (live & stopped)
    return state._replace(out=out, count=count, done=done, cur=jnp.where(live, chosen, state.cur))


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "sample"), donate_argnums=(2,))
def _prefill_into(
    model: MoEModel,
    params: dict[str, Any],
    state: SlotState,
    ids: Array,
    mask: Array,
    slot_ids: Array,
    column: Array,
    stop_ids: Array,
    temperature: Array,
    top_p: Array,
    router_edit: RouterEdit | None,
    *,
    max_new_tokens: int,
    sample: bool,
) -> SlotState:
    """Prefill ``ids`` / ``mask`` ``[R, P]`` (left-padded) and place each row in slot
    ``slot_ids[r]`` (a slot id ``>= B`` drops the row: padding rows) at columns ``[column - P,
    column)``, with its first chosen token recorded."""
    r, p = ids.shape
    slots, columns = state.mask.shape
    fresh = init_kv_cache(model.cfg, r, p, model.opts.dtype)
    positions = jnp.where(mask > 0, jnp.cumsum(mask, axis=1) - 1, 1).astype(jnp.int32)
    out = model.apply(
        {"params": params}, ids, mask, positions, kv_cache=fresh, router_edit=router_edit, last_token_logits=True
    )
    rng, sub = jax.random.split(state.rng)
    first = _choose(out.logits[:, -1].astype(jnp.float32), sub, temperature, top_p, sample)

    cols = column - p + jnp.arange(p)
    where = (slot_ids[:, None], cols[None, :])

    def place(big: Array, new: Array) -> Array:  # big [n, B, S, ...], new [n, R, P, ...]
        return big.at[:, where[0], where[1]].set(new.astype(big.dtype), mode="drop")

    def place_state(big: Array, new: Array) -> Array:  # big [n, B, ...], new [n, R, ...]: whole rows
        return big.at[:, slot_ids].set(new.astype(big.dtype), mode="drop")

    keys = {k: place(v, out.kv_cache.keys[k]) for k, v in state.cache.keys.items()}
    values = {k: place(v, out.kv_cache.values[k]) for k, v in state.cache.values.items()}
    conv = {k: place_state(v, out.kv_cache.conv[k]) for k, v in state.cache.conv.items()}
    recurrent = {k: place_state(v, out.kv_cache.recurrent[k]) for k, v in state.cache.recurrent.items()}
    row_mask = jax.lax.dynamic_update_slice(jnp.zeros((r, columns), jnp.int32), mask, (0, column - p))
    placed = SlotState(
        state.cache._replace(keys=keys, values=values, conv=conv, recurrent=recurrent),
        state.mask.at[slot_ids].set(row_mask, mode="drop"),
        state.cur.at[slot_ids].set(first, mode="drop"),
        state.pos.at[slot_ids].set(positions[:, -1] + 1, mode="drop"),
        state.out.at[slot_ids].set(0, mode="drop"),
        state.count.at[slot_ids].set(0, mode="drop"),
        state.done.at[slot_ids].set(False, mode="drop"),
        rng,
    )
    live = jnp.zeros((slots,), bool).at[slot_ids].set(True, mode="drop")
    return _record(placed, placed.cur, live, stop_ids, max_new_tokens)


@functools.partial(jax.jit, donate_argnums=(0,), static_argnames=("shift",))
def _shift(state: SlotState, *, shift: int) -> SlotState:
    """Move every slot's columns ``shift`` to the left (the first ``shift`` columns are dropped)."""

    def left(a: Array, axis: int) -> Array:
        return jnp.roll(a, -shift, axis=axis)

    keys = {k: left(v, 2) for k, v in state.cache.keys.items()}
    values = {k: left(v, 2) for k, v in state.cache.values.items()}
    mask = left(state.mask, 1)
    mask = mask.at[:, mask.shape[1] - shift :].set(0)
    return state._replace(cache=state.cache._replace(keys=keys, values=values), mask=mask)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "sample"), donate_argnums=(2,))
def _decode_segment(
    model: MoEModel,
    params: dict[str, Any],
    state: SlotState,
    column: Array,
    limit: Array,
    need: Array,
    stop_ids: Array,
    pad_id: Array,
    temperature: Array,
    top_p: Array,
    router_edit: RouterEdit | None,
    *,
    max_new_tokens: int,
    sample: bool,
) -> tuple[SlotState, Array]:
    """Decode all slots from cache column ``column`` until ``need`` slots are done (stopped or
    empty) or ``limit`` steps were taken; returns the state and the steps taken."""

    def cond(carry):
        step, state = carry
        return (step < limit) & (jnp.sum(state.done.astype(jnp.int32)) < need)

    def body(carry):
        step, state = carry
        c = column + step
        live = ~state.done
        tok = jnp.where(live, state.cur, pad_id)
        mask = jax.lax.dynamic_update_slice(state.mask, jnp.ones((tok.shape[0], 1), jnp.int32), (0, c))
        cache = state.cache._replace(index=c)
        out = model.apply(
            {"params": params},
            tok[:, None],
            mask,
            state.pos[:, None],
            kv_cache=cache,
            router_edit=router_edit,
            last_token_logits=True,
        )
        rng, sub = jax.random.split(state.rng)
        chosen = _choose(out.logits[:, -1].astype(jnp.float32), sub, temperature, top_p, sample)
        state = state._replace(cache=out.kv_cache, mask=mask, pos=state.pos + 1, rng=rng)
        return step + 1, _record(state, chosen, live, stop_ids, max_new_tokens)

    steps, state = jax.lax.while_loop(cond, body, (jnp.int32(0), state))
    return state, steps


def generate_continuous(
    model: MoEModel,
    params: dict[str, Any],
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    slots: int | None = None,
    refill: int | None = None,
    pad_multiple: int = 32,
    sampling: SamplingOptions = GREEDY,
    router_edit: RouterEdit | None = None,
    progress: Any = None,
) -> list[list[int]]:
    """Each prompt's new tokens (up to and including its stop token), decoded in ``slots`` decode
    slots refilled as rows stop (default :func:`default_slots`, never more than the prompts
    rounded up to a power of two). Decoding pauses for a refill once ``refill`` slots are free
    (fewer when fewer prompts wait; default a quarter of the slots): larger prefills, which run
    faster per token, against slots idle for longer. Prompts are served
    shortest first; ``pad_multiple`` is the prompt-length bucket. ``progress`` (e.g. a tqdm bar) gets ``update(1)`` per finished prompt."""
    if max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if pad_multiple < 1:
        raise GenerationError(f"pad_multiple must be >= 1, got {pad_multiple}")
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise GenerationError("every prompt must hold at least one token")
    span, columns = cache_columns(max(len(p) for p in prompts), max_new_tokens, pad_multiple)
    if slots is None:
        slots = default_slots(model, columns)
    if slots < 1:
        raise GenerationError(f"slots must be >= 1, got {slots}")
    if refill is None:
        refill = max(1, slots // 4)
    if refill < 1:
        raise GenerationError(f"refill must be >= 1, got {refill}")
    slots = min(slots, _pow2_at_least(len(prompts)))
    stops = jnp.asarray(np.asarray(sorted({int(s) for s in stop_ids}) or [-1], np.int32))
    temperature = jnp.float32(max(sampling.temperature, 1e-6))
    top_p = jnp.float32(sampling.top_p)
    sample = sampling.temperature > 0
    static = dict(max_new_tokens=max_new_tokens, sample=sample)

    zeros = np.zeros((slots,), np.int32)
    state = _init_state(
        model,
        *put_batch(
            params,
            np.zeros((slots, columns), np.int32),
            zeros,
            np.zeros((slots, max_new_tokens), np.int32),
            np.ones((slots,), bool),
        ),
        jax.random.PRNGKey(sampling.seed),
    )
    queue = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    owner: list[int | None] = [None] * slots  # prompt index each slot serves
    results: dict[int, list[int]] = {}
    column = span  # every prompt bucket fits before it
    while queue or any(o is not None for o in owner):
        free = [s for s in range(slots) if owner[s] is None]
        while queue and free:
            take = min(len(free), len(queue), MAX_PREFILL_ROWS)
            group, queue = queue[:take], queue[take:]
            rows = _pow2_at_least(take)
            seqs = [prompts[i] for i in group] + [prompts[group[0]]] * (rows - take)
            ids, mask = left_pad(seqs, pad_id, pad_multiple)
            slot_ids = np.full((rows,), slots, np.int32)  # padding rows: out of range, dropped
            slot_ids[:take] = free[:take]
            for s, i in zip(free[:take], group, strict=True):
                owner[s] = i
            free = free[take:]
            state = _prefill_into(
                model,
                params,
                state,
                *put_batch(params, ids, mask, slot_ids),
                jnp.int32(column),
                stops,
                temperature,
                top_p,
                router_edit,
                **static,
            )
        if column == columns:
            state = _shift(state, shift=columns - span)
            column = span
        state, steps = _decode_segment(
            model,
            params,
            state,
            jnp.int32(column),
            jnp.int32(columns - column),
            jnp.int32(min(refill, len(queue)) if queue else slots),
            stops,
            jnp.int32(pad_id),
            temperature,
            top_p,
            router_edit,
            **static,
        )
        column += int(to_host(steps))
        done, count = to_host((state.done, state.count))
        finished = [s for s in range(slots) if owner[s] is not None and done[s]]
        if finished:
            out = to_host(state.out)
            for s in finished:
                results[owner[s]] = out[s, : count[s]].tolist()
                owner[s] = None
                if progress is not None:
                    progress.update(1)
    return [results[i] for i in range(len(prompts))]


def generate_text_continuous(
    model: MoEModel,
    params: dict[str, Any],
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    slots: int | None = None,
    refill: int | None = None,
    pad_multiple: int = 32,
    sampling: SamplingOptions = GREEDY,
    router_edit: RouterEdit | None = None,
    progress: Any = None,
) -> list[str]:
    """:func:`generate_continuous` for rendered prompt strings (chat template already applied):
    the texts :func:`~rise_jax.evaluation.generate.generate_text` returns, stop tokens dropped."""
    if not prompts:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    stop_set = {int(s) for s in stop_ids}
    new = generate_continuous(
        model,
        params,
        encoded,
        max_new_tokens=max_new_tokens,
        stop_ids=stop_ids,
        pad_id=pad_id,
        slots=slots,
        refill=refill,
        pad_multiple=pad_multiple,
        sampling=sampling,
        router_edit=router_edit,
        progress=progress,
    )
    return [tokenizer.decode([t for t in toks if t not in stop_set], skip_special_tokens=True) for toks in new]
