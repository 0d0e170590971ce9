"""Routing statistics: replay text through the frozen model and count which experts fire.

Per language a jit-compiled step folds each batch into on-device accumulators (Eq. activation
frequency ``a[λ,l,i] = (1/T_λ) Σ_t 1[i ∈ TopK(t,l)]`` needs the counts and ``T_λ``):

* ``counts`` int ``[L, E]``   — Σ over real tokens of 1[i ∈ TopK(t, l)]
* ``tokens`` int              — real tokens (attention-mask sum)
* ``weight_mass`` ``[L, E]``  — Σ_t g[t,l,i], the routing weight if selected else 0 (ESFT-Gate)
* ``prob_mass`` ``[L, E]``    — Σ_t softmax(z_t,l)_i (router-probability mass)
* ``entropy_sum`` ``[L]``     — Σ_t H(softmax(z_t,l)) (per-token routing entropy, nats)
* ``seq_entropy_sum`` ``[L]`` — Σ_s H(p̄_s,l), p̄_s,l the token mean of softmax(z) over sequence s
  (Bandarkar et al.'s routing entropy: of the sequence's averaged distribution), and ``sequences``
* ``consistency_sum`` ``[L]`` — Σ_s of the mean Jaccard similarity |S_t ∩ S_u| / |S_t ∪ S_u| of
  the top-k sets of every pair of distinct real tokens t < u of sequence s (inter-token routing
  consistency), over the ``consistency_sequences`` sequences with at least two tokens
* optionally per sequence the mean router distribution ``[N, L, E]`` (routing divergence on
  parallel text, Bandarkar et al.).

Padding never counts; the LM head is not computed. Rows may be packed (``replay(pack=True)``,
``stats.pack``: several sequences a row, told apart by segment ids; positions restart and attention
never crosses a sequence): every token counts once and the sequence-level statistics are taken per
segment, so the result equals the unpacked replay (up to float summation order). Device accumulators are flushed to host
int64/float64 every ``flush_every`` batches so counts stay exact on any corpus size.

Artefact (directory ``routing_stats/``), readable without rise_jax:

* ``stats.npz``: ``languages`` [Λ] str, ``counts`` [Λ, L, E] int64, ``tokens`` [Λ] int64,
  ``weight_mass`` / ``prob_mass`` [Λ, L, E] float64, ``entropy_sum`` [Λ, L] float64,
  ``seq_entropy_sum`` / ``consistency_sum`` [Λ, L] float64, ``sequences`` /
  ``consistency_sequences`` [Λ] int64, and per
  language with sequence distributions ``seq_probs__<lang>`` [N, L, E] float32 and
  ``seq_ids__<lang>`` [N] str (example ids: FLoRes ``index_id``, line numbers).
* ``summary.json``: ``model`` {model_type, num_moe_layers, num_experts, top_k, moe_layer_ids,
  checkpoint}, ``languages`` {code: {tokens, sequences, truncated, available; from the stats
  stage also as_written, name and, for plain text, blank_lines_skipped}}, ``source``,
  ``max_length``, ``template``, and ``keys`` (this description, per key).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from rise_jax.data.batching import TokenizedCorpus, bucketed_batches, pack_rows, packed_batches, row_length
from rise_jax.distributed import is_writer, put_batch, to_host
from rise_jax.errors import RiseError
from rise_jax.io_utils import publish, read_json_object, write_json_atomic
from rise_jax.models.config import ModelConfig
from rise_jax.models.layers import segment_positions
from rise_jax.models.transformer import MoEModel

KEY_DOCS = {
    "languages": "[Λ] canonical language codes (ISO 639-1 where one exists; rise_jax.data.languages), the row order "
    "of every per-language array; summary.json's languages maps each to its counts, the code as written and its name",
    "counts": "[Λ, L, E] int64: real tokens whose top-k at MoE layer l contains expert i",
    "tokens": "[Λ] int64: real (non-padding) tokens replayed",
    "weight_mass": "[Λ, L, E] float64: sum over tokens of the routing weight given to expert i (0 if not selected)",
    "prob_mass": "[Λ, L, E] float64: sum over tokens of softmax(router logits)_i",
    "entropy_sum": "[Λ, L] float64: sum over tokens of the router-distribution entropy (nats)",
    "seq_entropy_sum": "[Λ, L] float64: sum over sequences of the entropy of the sequence's token-mean router "
    "distribution (nats)",
    "sequences": "[Λ] int64: sequences replayed",
    "consistency_sum": "[Λ, L] float64: sum over sequences of the mean top-k Jaccard similarity of all pairs of "
    "distinct tokens in the sequence (inter-token routing consistency)",
    "consistency_sequences": "[Λ] int64: sequences with at least two tokens (the denominator of consistency_sum)",
    "seq_probs__<lang>": "[N, L, E] float32: per sequence, mean over its tokens of softmax(router logits)",
    "seq_ids__<lang>": "[N] str: example id of each row of seq_probs__<lang> (parallel across languages)",
}


class StatsError(RiseError, ValueError):
    """Statistics that cannot be used (wrong model shape, missing language, unreadable file)."""


@dataclasses.dataclass
class RoutingStats:
    languages: list[str]
    counts: np.ndarray
    tokens: np.ndarray
    weight_mass: np.ndarray
    prob_mass: np.ndarray
    entropy_sum: np.ndarray
    model: dict[str, Any]
    info: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    seq_probs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    seq_ids: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Sequence-level accumulators (None in statistics written before they existed).
    seq_entropy_sum: np.ndarray | None = None
    sequences: np.ndarray | None = None
    consistency_sum: np.ndarray | None = None
    consistency_sequences: np.ndarray | None = None

    @property
    def num_layers(self) -> int:
        return int(self.counts.shape[1])

    @property
    def num_experts(self) -> int:
        return int(self.counts.shape[2])

    @property
    def top_k(self) -> int:
        return int(self.model["top_k"])

    def index(self, lang: str) -> int:
        if lang not in self.languages:
            raise StatsError(f"language {lang!r} is not in the routing statistics (have: {', '.join(self.languages)})")
        return self.languages.index(lang)

    def frequencies(self) -> np.ndarray:
        """``a[λ, l, i]``: activation frequency; each ``[λ, l]`` row sums to k."""
        return self.counts / np.maximum(self.tokens, 1)[:, None, None]

    def gate_scores(self) -> np.ndarray:
        """ESFT-Gate ``G[λ, l, i] = (1/N) Σ_t g[t, l, i]``."""
        return self.weight_mass / np.maximum(self.tokens, 1)[:, None, None]

    def mean_entropy(self) -> np.ndarray:
        """``[Λ, L]`` mean per-token routing entropy (nats)."""
        return self.entropy_sum / np.maximum(self.tokens, 1)[:, None]

    def sequence_entropy(self) -> np.ndarray | None:
        """``[Λ, L]`` mean over sequences of the entropy of each sequence's token-averaged router
        distribution (nats; the companion study's routing entropy), or None for old statistics."""
        if self.seq_entropy_sum is None or self.sequences is None:
            return None
        return self.seq_entropy_sum / np.maximum(self.sequences, 1)[:, None]

    def consistency(self) -> np.ndarray | None:
        """``[Λ, L]`` inter-token routing consistency: mean over sequences of the mean top-k
        Jaccard similarity between pairs of distinct tokens (NaN without two-token sequences)."""
        if self.consistency_sum is None or self.consistency_sequences is None:
            return None
        n = self.consistency_sequences[:, None].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, self.consistency_sum / np.maximum(n, 1), np.nan)

    def check_model(self, cfg: ModelConfig, source: str = "routing statistics") -> None:
        """Refuse statistics made with another model shape."""
        want = (cfg.num_moe_layers, cfg.num_experts, cfg.top_k)
        have = (self.num_layers, self.num_experts, self.top_k)
        if want != have:
            raise StatsError(
                f"{source}: made for a model with (MoE layers, experts, top-k) = {have}, but the model has {want}"
            )

    def save(self, directory: str) -> str:
        """Write ``stats.npz`` and ``summary.json`` into ``directory`` (the writer process only)."""
        if not is_writer():
            return directory
        os.makedirs(directory, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "languages": np.asarray(self.languages, dtype=str),
            "counts": self.counts.astype(np.int64),
            "tokens": self.tokens.astype(np.int64),
            "weight_mass": self.weight_mass.astype(np.float64),
            "prob_mass": self.prob_mass.astype(np.float64),
            "entropy_sum": self.entropy_sum.astype(np.float64),
        }
        for key in ("seq_entropy_sum", "sequences", "consistency_sum", "consistency_sequences"):
            value = getattr(self, key)
            if value is not None:
                arrays[key] = value.astype(np.int64 if key.endswith("sequences") else np.float64)
        for lang, probs in self.seq_probs.items():
            arrays[f"seq_probs__{lang}"] = probs.astype(np.float32)
            arrays[f"seq_ids__{lang}"] = np.asarray(self.seq_ids[lang], dtype=str)
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=directory)
        os.close(fd)
        try:
            np.savez(tmp, **arrays)
            publish(tmp, os.path.join(directory, "stats.npz"))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        summary = {"model": self.model, "languages": self.info, **self.extra, "keys": KEY_DOCS}
        write_json_atomic(os.path.join(directory, "summary.json"), summary)
        return directory

    @classmethod
    def load(cls, directory: str) -> RoutingStats:
        npz_path, json_path = os.path.join(directory, "stats.npz"), os.path.join(directory, "summary.json")
        for p in (npz_path, json_path):
            if not os.path.isfile(p):
                raise StatsError(f"{p}: missing (run the stats stage first)")
        try:
            with np.load(npz_path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as err:  # numpy / zipfile raise many types on a damaged archive
            raise StatsError(f"{npz_path}: unreadable routing statistics: {type(err).__name__}: {err}") from err
        summary = read_json_object(json_path, "routing statistics summary", StatsError)
        _check_loaded(npz_path, json_path, data, summary)
        languages = [str(x) for x in data["languages"]]
        seq_probs = {k.split("__", 1)[1]: v for k, v in data.items() if k.startswith("seq_probs__")}
        seq_ids = {k.split("__", 1)[1]: [str(x) for x in v] for k, v in data.items() if k.startswith("seq_ids__")}
        extra = {k: v for k, v in summary.items() if k not in ("model", "languages", "keys")}
        return cls(
            languages,
            data["counts"],
            data["tokens"],
            data["weight_mass"],
            data["prob_mass"],
            data["entropy_sum"],
            summary["model"],
            summary["languages"],
            seq_probs,
            seq_ids,
            extra,
            **{k: data.get(k) for k in ("seq_entropy_sum", "sequences", "consistency_sum", "consistency_sequences")},
        )


def _check_loaded(npz_path: str, json_path: str, data: dict[str, np.ndarray], summary: dict[str, Any]) -> None:
    """What :meth:`RoutingStats.load` read holds every key with consistent shapes; errors name the
    file and the key."""
    for key in ("languages", "counts", "tokens", "weight_mass", "prob_mass", "entropy_sum"):
        if key not in data:
            raise StatsError(
                f"{npz_path}: no {key!r} array (not routing statistics, or damaged: rerun the stats stage)"
            )
    n = len(data["languages"])
    if data["counts"].ndim != 3 or data["counts"].shape[0] != n:
        raise StatsError(
            f"{npz_path}: 'counts' has shape {data['counts'].shape}, expected [{n} languages, layers, experts]"
        )
    for key in ("tokens",):
        if data[key].shape != (n,):
            raise StatsError(f"{npz_path}: {key!r} has shape {data[key].shape}, expected ({n},)")
    for key in ("weight_mass", "prob_mass"):
        if data[key].shape != data["counts"].shape:
            raise StatsError(f"{npz_path}: {key!r} has shape {data[key].shape}, expected {data['counts'].shape}")
    model = summary.get("model")
    if not isinstance(model, dict):
        raise StatsError(f"{json_path}: no 'model' object (damaged: rerun the stats stage)")
    top_k = model.get("top_k")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise StatsError(f"{json_path}: model.top_k = {top_k!r}: expected a whole number >= 1")
    if not isinstance(summary.get("languages"), dict):
        raise StatsError(f"{json_path}: no 'languages' object (damaged: rerun the stats stage)")


def _zero_acc(cfg: ModelConfig) -> dict[str, jax.Array]:
    shape = (cfg.num_moe_layers, cfg.num_experts)
    return {
        "counts": jnp.zeros(shape, jnp.int32),
        "tokens": jnp.zeros((), jnp.int32),
        "weight_mass": jnp.zeros(shape, jnp.float32),
        "prob_mass": jnp.zeros(shape, jnp.float32),
        "entropy_sum": jnp.zeros(shape[:1], jnp.float32),
        "seq_entropy_sum": jnp.zeros(shape[:1], jnp.float32),
        "sequences": jnp.zeros((), jnp.int32),
        "consistency_sum": jnp.zeros(shape[:1], jnp.float32),
        "consistency_sequences": jnp.zeros((), jnp.int32),
    }


def _segment_onehot(segments: jax.Array, num_segments: int) -> jax.Array:
    """float ``[B, T, G]``: 1 where token ``t`` of row ``b`` is in segment ``g + 1``."""
    return (segments[..., None] == jnp.arange(1, num_segments + 1, dtype=segments.dtype)).astype(jnp.float32)


def _pairwise_consistency(selected: jax.Array, segments: jax.Array, k: int, num_segments: int = 1) -> jax.Array:
    """``[L, B, G]`` mean top-k Jaccard over pairs of distinct real tokens of each sequence
    (segment ``g + 1`` of row ``b``; 0 for sequences with fewer than two tokens). ``selected``
    float ``[L, B, T, E]`` (1 where chosen, masked); ``segments`` ``[B, T]`` segment ids (a 0/1
    mask: one sequence a row). Pairs never cross a segment."""
    same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] > 0)
    pair = same.astype(jnp.float32) * (1.0 - jnp.eye(segments.shape[1], dtype=jnp.float32))
    onehot = _segment_onehot(segments, num_segments)
    n = jnp.sum(onehot, axis=1)  # [B, G]

    def one_layer(sel):  # [B, T, E] -> [B, G]; one layer at a time keeps the [B, T, T] overlap small
        inter = jnp.einsum("bte,bue->btu", sel, sel)
        jac = inter / jnp.maximum(2 * k - inter, 1.0)
        per_token = jnp.sum(jac * pair, axis=2)  # [B, T]
        return jnp.einsum("bt,btg->bg", per_token, onehot) / jnp.maximum(n * (n - 1), 1.0)

    return jax.lax.map(one_layer, selected)


def make_replay_step(model: MoEModel, with_seq_probs: bool):
    """``step(acc, params, ids, segments, num_segments) -> (acc, seq_probs [B, G, L, E] | None)``,
    jit-compiled, accumulator donated. ``segments`` ``[B, T]``: segment ids of packed rows (the
    packing convention; a 0/1 mask is one sequence a row), ``num_segments`` (static) ``G``: the
    most segments a row holds. Every statistic counts each real token once; the sequence-level
    ones (entropy of the mean distribution, consistency, ``seq_probs``) are per segment, with
    positions restarting at every segment, so a packed replay equals an unpacked one."""
    e, k = model.cfg.num_experts, model.cfg.top_k

    def step(acc, params, ids, segments, num_segments):
        positions = segment_positions(segments)
        out = model.apply(
            {"params": params}, ids, segments, positions, return_routing=True, skip_lm_head=True, inference=True
        )
        r = out.routing
        real = segments > 0
        m = real.astype(jnp.float32)[None, :, :, None]  # [1, B, T, 1]
        onehot = jax.nn.one_hot(r.topk_indices, e, dtype=jnp.float32)  # [L, B, T, k, E]
        selected = jnp.sum(onehot, axis=-2) * m  # [L, B, T, E]
        weights = jnp.einsum("lbtke,lbtk->lbte", onehot, r.topk_weights) * m
        logp = jax.nn.log_softmax(r.router_logits, axis=-1)
        probs = jnp.exp(logp) * m
        entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1) * m[..., 0]
        in_segment = _segment_onehot(segments, num_segments)  # [B, T, G]
        lengths = jnp.sum(in_segment, axis=1)  # [B, G]; empty segments (and rows) count nothing
        seq_mean = jnp.einsum("lbte,btg->lbge", probs, in_segment) / jnp.maximum(lengths, 1)[None, :, :, None]
        seq_entropy = -jnp.sum(jnp.where(seq_mean > 0, seq_mean * jnp.log(seq_mean), 0.0), axis=-1)  # [L, B, G]
        real_seq = (lengths > 0).astype(jnp.float32)
        pairs_seq = (lengths > 1).astype(jnp.float32)
        consistency = _pairwise_consistency(selected, segments, k, num_segments)  # [L, B, G]
        new = {
            "seq_entropy_sum": acc["seq_entropy_sum"] + jnp.sum(seq_entropy * real_seq, axis=(1, 2)),
            "sequences": acc["sequences"] + jnp.sum(real_seq).astype(jnp.int32),
            "consistency_sum": acc["consistency_sum"] + jnp.sum(consistency * pairs_seq, axis=(1, 2)),
            "consistency_sequences": acc["consistency_sequences"] + jnp.sum(pairs_seq).astype(jnp.int32),
            "counts": acc["counts"] + jnp.sum(selected, axis=(1, 2)).astype(jnp.int32),
            "tokens": acc["tokens"] + jnp.sum(real).astype(jnp.int32),
            "weight_mass": acc["weight_mass"] + jnp.sum(weights, axis=(1, 2)),
            "prob_mass": acc["prob_mass"] + jnp.sum(probs, axis=(1, 2)),
            "entropy_sum": acc["entropy_sum"] + jnp.sum(entropy, axis=(1, 2)),
        }
        seq = None
        if with_seq_probs:
            seq = jnp.transpose(seq_mean, (1, 2, 0, 3))
        return new, seq

    return jax.jit(step, donate_argnums=0, static_argnames="num_segments")


def replay_batches(
    sequences: Sequence[np.ndarray], batch_size: int, bucket_multiple: int, pad_id: int, pack: bool
) -> tuple[int, Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """(number of batches, the batches ``(ids [B, T], segments [B, T], index [B, G])``): packed
    rows (:func:`~rise_jax.data.batching.packed_batches`) or one sequence a row, length-bucketed
    (:func:`~rise_jax.data.batching.bucketed_batches`, ``G = 1``)."""
    if pack:
        rows = pack_rows([len(s) for s in sequences], row_length([len(s) for s in sequences], bucket_multiple))
        return -(-len(rows) // batch_size), packed_batches(sequences, batch_size, bucket_multiple, pad_id)
    plain = bucketed_batches(sequences, batch_size, bucket_multiple, pad_id)
    return -(-len(sequences) // batch_size), ((ids, mask, index[:, None]) for ids, mask, index in plain)


def replay(
    model: MoEModel,
    params: Any,
    corpora: Sequence[TokenizedCorpus],
    batch_size: int = 8,
    bucket_multiple: int = 32,
    seq_probs_languages: Sequence[str] = (),
    flush_every: int = 64,
    pad_id: int = 0,
    progress: bool = True,
    model_info: dict[str, Any] | None = None,
    pack: bool = True,
) -> RoutingStats:
    """Replay every corpus and return the statistics (languages in the order given). ``pack``:
    several sequences a row (:func:`~rise_jax.data.batching.packed_batches`, ``batch_size`` rows a
    batch), padding-free and equal to the unpacked replay up to float summation order; else one
    sequence a row (``batch_size`` sequences a batch)."""
    cfg = model.cfg
    steps = {flag: make_replay_step(model, flag) for flag in (False, True)}
    rows: dict[str, list[np.ndarray]] = {k: [] for k in _zero_acc(cfg)}
    seq_probs, seq_ids, info = {}, {}, {}
    for corpus in corpora:
        if not corpus.sequences:
            raise StatsError(f"language {corpus.language}: no sequences to replay")
    plans = [replay_batches(c.sequences, batch_size, bucket_multiple, pad_id, pack) for c in corpora]
    bar = tqdm(
        total=sum(n for n, _ in plans), desc="routing replay", unit="batch", disable=not (progress and is_writer())
    )
    for corpus, (_, batches) in zip(corpora, plans, strict=True):
        lang = corpus.language
        want_seq = lang in seq_probs_languages
        host = {
            k: np.zeros(v.shape, np.int64 if v.dtype == jnp.int32 else np.float64) for k, v in _zero_acc(cfg).items()
        }
        acc = _zero_acc(cfg)
        per_seq = np.zeros((len(corpus.sequences), cfg.num_moe_layers, cfg.num_experts), np.float32)
        t0, n_tok = time.perf_counter(), 0
        bar.set_description(f"routing replay [{lang}]")
        for b, (ids, segments, index) in enumerate(batches):
            acc, seq = steps[want_seq](acc, params, *put_batch(params, ids, segments), num_segments=index.shape[1])
            if want_seq:
                seq = to_host(seq)  # [B, G, L, E]
                where = np.nonzero(index >= 0)  # (row, segment) of every sequence in the batch
                per_seq[index[where]] = seq[where]
            n_tok += int(np.count_nonzero(segments))
            if (b + 1) % flush_every == 0:
                for k, v in to_host(acc).items():
                    host[k] += v
                acc = _zero_acc(cfg)
            bar.update(1)
            bar.set_postfix(tokens_per_s=f"{n_tok / max(time.perf_counter() - t0, 1e-9):.0f}")
        for k, v in to_host(acc).items():
            host[k] += v
        for k in rows:
            rows[k].append(host[k])
        if want_seq:
            seq_probs[lang], seq_ids[lang] = per_seq, list(corpus.example_ids)
        info[lang] = {
            "tokens": int(host["tokens"]),
            "sequences": len(corpus.sequences),
            "truncated": corpus.truncated,
            "available": corpus.available,
        }
    bar.close()
    model_meta = {
        "model_type": cfg.model_type,
        "num_moe_layers": cfg.num_moe_layers,
        "num_experts": cfg.num_experts,
        "top_k": cfg.top_k,
        "moe_layer_ids": list(cfg.moe_layer_ids),
        **(model_info or {}),
    }
    return RoutingStats(
        [c.language for c in corpora],
        np.stack(rows["counts"]),
        np.asarray(rows["tokens"], np.int64),
        np.stack(rows["weight_mass"]),
        np.stack(rows["prob_mass"]),
        np.stack(rows["entropy_sum"]),
        model_meta,
        info,
        seq_probs,
        seq_ids,
        seq_entropy_sum=np.stack(rows["seq_entropy_sum"]),
        sequences=np.asarray(rows["sequences"], np.int64),
        consistency_sum=np.stack(rows["consistency_sum"]),
        consistency_sequences=np.asarray(rows["consistency_sequences"], np.int64),
    )
