"""The pretraining mix: which language (stream) each batch row is drawn from, and which sentence.

Shares are held exactly, not just in expectation: row ``r`` (counted over the whole run) goes to
the stream whose count lags its target ``(r + 1) · p_s`` most (the largest-deficit rule of smooth
weighted round robin), so after any ``n`` rows every stream has ``n · p_s`` rows to within one,
and a 100 : 10 : 1 mix puts one low-resource row in every 111. The sentence of each row is drawn
uniformly from its stream by a generator seeded with ``(seed, step)``: a batch depends on its step
alone, so a resumed run draws the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np


def shares(weights: list[float]) -> np.ndarray:
    """Mix weights (any positive scale: ``100, 10, 1``) -> shares summing to 1."""
    w = np.asarray(weights, np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(f"mix weights {list(weights)}: give one positive number per language")
    return w / w.sum()


def row_streams(weights: list[float], rows: int) -> np.ndarray:
    """The stream of each of the run's first ``rows`` rows (module docstring's rule)."""
    p = shares(weights)
    counts = np.zeros(len(p), np.float64)
    out = np.empty(rows, np.int64)
    for r in range(rows):
        s = int(np.argmax((r + 1) * p - counts))
        counts[s] += 1
        out[r] = s
    return out


def batch_rows(streams: np.ndarray, sizes: list[int], step: int, batch_size: int, seed: int) -> list[tuple[int, int]]:
    """``(stream, sentence index)`` of each row of the batch of ``step``: ``streams`` is the run's
    :func:`row_streams`, ``sizes`` the streams' sentence counts."""
    rows = streams[step * batch_size : (step + 1) * batch_size]
    rng = np.random.default_rng([seed, step])
    return [(int(s), int(rng.integers(sizes[s]))) for s in rows]
