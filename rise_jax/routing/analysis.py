"""Routing analysis metrics (pure numpy over :class:`~rise_jax.routing.stats.RoutingStats` arrays).

* Global overlap: ``G_λ`` = the top-N of all L·E experts by total activation count;
  ``J(λ1, λ2) = |G_λ1 ∩ G_λ2| / |G_λ1 ∪ G_λ2|``.
* Layer-wise overlap with a reference language r: ``G_λ^l`` = top-n experts of layer l by
  ``a[λ,l,·]``; ``J_l(λ) = |G_λ^l ∩ G_r^l| / |G_λ^l ∪ G_r^l|``; zone average = mean over the
  zone's layers (paper Table 2).
* Routing divergence (Bandarkar et al.): per sequence and layer the mean router distribution q;
  ``JS(q_λ‖q_en)`` divided by ``ln E`` minus their mean entropy (:func:`entropy_normalised_jsd`);
  averaged over the parallel sentences per layer.
* Per-language top experts; Bandarkar et al.'s task and multilingual experts; the performance ↔
  alignment correlation.

Ties in top-N choices are broken by lower (layer, expert) index, so every result is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rise_jax.zones import DEFAULT_RATIOS, ZONES, zone_of_layers


def top_n_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest entries of a flat array; ties -> lower index first."""
    order = np.lexsort((np.arange(scores.size), -scores.ravel()))
    return np.sort(order[:n])


def jaccard(a, b) -> float:
    a, b = set(np.asarray(a).tolist()), set(np.asarray(b).tolist())
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def global_top_sets(counts: np.ndarray, n: int = 30) -> list[np.ndarray]:
    """Per language, the flat indices (``l·E + i``) of its top-``n`` experts over all layers."""
    return [top_n_indices(c.ravel().astype(np.float64), n) for c in counts]


def global_jaccard_matrix(counts: np.ndarray, n: int = 30) -> np.ndarray:
    """``[Λ, Λ]`` Jaccard similarity of the global top-N sets."""
    sets = global_top_sets(counts, n)
    return np.array([[jaccard(a, b) for b in sets] for a in sets])


def layerwise_jaccard(freq: np.ndarray, ref: int, n: int) -> np.ndarray:
    """``[Λ, L]``: ``J_l(λ)`` of each language's per-layer top-n set against language ``ref``."""
    num_lang, num_layers, _ = freq.shape
    out = np.zeros((num_lang, num_layers))
    for layer in range(num_layers):
        ref_set = top_n_indices(freq[ref, layer], n)
        for lam in range(num_lang):
            out[lam, layer] = jaccard(top_n_indices(freq[lam, layer], n), ref_set)
    return out


def zone_averages(per_layer: np.ndarray, zone_ratios: tuple[float, float] = DEFAULT_RATIOS) -> dict[str, np.ndarray]:
    """Mean of ``[..., L]`` values over each zone's layers (NaN for an empty zone); ``avg``: the
    mean of the (non-empty) zone means, the RISE paper's Table 2 "Avg."; ``all``: the mean over
    every layer (differs from ``avg`` when the zones have unequal sizes)."""
    zones = np.array(zone_of_layers(per_layer.shape[-1], zone_ratios))
    out = {}
    for z in ZONES:
        sel = zones == z
        out[z] = per_layer[..., sel].mean(-1) if sel.any() else np.full(per_layer.shape[:-1], np.nan)
    present = [out[z] for z in ZONES if (zones == z).any()]
    out["avg"] = np.mean(present, axis=0)
    out["all"] = per_layer.mean(-1)
    return out


def group_overlap(matrix: np.ndarray, groups: list[str]) -> dict[str, float | None]:
    """Mean pairwise overlap (e.g. the global top-N Jaccard) within the high-resource languages,
    within the low-resource ones, and between the two groups — the RISE paper's "routing
    isolation" statement (§3.1) as numbers. None where a group has too few languages."""

    def mean(pairs: list[tuple[int, int]]) -> float | None:
        return float(np.mean([matrix[i, j] for i, j in pairs])) if pairs else None

    n = len(groups)
    high = [i for i in range(n) if groups[i] == "high"]
    low = [i for i in range(n) if groups[i] == "low"]
    return {
        "within_high": mean([(i, j) for i in high for j in high if i < j]),
        "within_low": mean([(i, j) for i in low for j in low if i < j]),
        "between": mean([(i, j) for i in high for j in low]),
    }


MIX_FLOOR, LOG_EPS, DENOMINATOR_FLOOR = 1e-10, 1e-10, 1e-6


def js_divergence(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
    """``JS(p‖q) = ½ KL(p‖m) + ½ KL(q‖m)``, ``m = (p+q)/2`` floored at 1e-10 inside the log, natural
    log, terms with ``p_i = 0`` contributing 0 (Bandarkar et al.'s ``js_divergence``)."""
    m = np.maximum(0.5 * (p + q), MIX_FLOOR)

    def kl(a: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sum(np.where(a > 0, a * (np.log(np.where(a > 0, a, 1)) - np.log(m)), 0.0), axis=axis)

    return 0.5 * (kl(p) + kl(q))


def study_entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """``H(p) = -Σ p_i ln(p_i + 1e-10)`` (the companion study's ``calculate_entropy``)."""
    return -np.sum(p * np.log(p + LOG_EPS), axis=axis)


def entropy_normalised_jsd(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Bandarkar et al.'s entropy-normalised divergence (``calculate_entropy_normalized_jsd`` in
    their released analysis code):

        D_H-JS(p, q) = JS(p‖q) / max(ln E − (H(p) + H(q)) / 2, 1e-6)

    with ``E`` the number of experts (the length of ``axis``): JS divided by the largest JS two
    distributions of that average entropy could have (approximately), so layers whose routing is
    flatter are not read as more aligned. ``p``, ``q``: a sequence's token-mean of the softmax over
    all ``E`` router logits, and its parallel English sequence's."""
    e = p.shape[axis]
    denominator = np.log(e) - 0.5 * (study_entropy(p, axis) + study_entropy(q, axis))
    return js_divergence(p, q, axis) / np.maximum(denominator, DENOMINATOR_FLOOR)


def parallel_divergence(
    seq_probs: np.ndarray, seq_ids: list[str], ref_probs: np.ndarray, ref_ids: list[str]
) -> tuple[np.ndarray, int]:
    """``[L]`` mean :func:`entropy_normalised_jsd` between each sentence and its parallel reference
    sentence (matched by example id, so sentences dropped on either side do not shift the pairing),
    and the number of matched pairs."""
    ref_index = {sid: i for i, sid in enumerate(ref_ids)}
    pairs = [(i, ref_index[sid]) for i, sid in enumerate(seq_ids) if sid in ref_index]
    if not pairs:
        raise ValueError("no parallel sentences: example ids do not match the reference language's")
    a = seq_probs[[i for i, _ in pairs]].astype(np.float64)
    b = ref_probs[[j for _, j in pairs]].astype(np.float64)
    return entropy_normalised_jsd(a, b).mean(0), len(pairs)


def top_experts(freq_lang: np.ndarray, n: int) -> list[list[int]]:
    """Per layer, the ``n`` most activated experts of one language (most frequent first)."""
    out = []
    for row in freq_lang:
        order = np.lexsort((np.arange(row.size), -row))
        out.append([int(i) for i in order[:n]])
    return out


def performance_alignment(scores: dict[str, float], divergence: dict[str, list], layers: Sequence[int]) -> dict:
    """The companion study's performance ↔ alignment correlation.

    Per language: its task score and its mean divergence from English over ``layers`` (the middle
    layers by default); Pearson r and Spearman ρ across languages with two-sided p-values
    (``scipy.stats``). Languages with a score but no divergence curve (English itself) are left
    out; at least three languages are needed."""
    from scipy import stats as sps

    langs = [lang for lang in scores if lang in divergence]
    if len(langs) < 3:
        raise ValueError(
            f"a correlation needs at least 3 languages with both a score and a divergence curve; have {langs}"
        )
    layers = list(layers)
    x = np.asarray([float(np.mean([divergence[lang][layer] for layer in layers])) for lang in langs])
    y = np.asarray([float(scores[lang]) for lang in langs])
    out = {
        "languages": langs,
        "layers": layers,
        "points": [
            {"language": lang, "divergence": float(a), "score": float(b)}
            for lang, a, b in zip(langs, x, y, strict=True)
        ],
        "n": len(langs),
        "note": None,
    }
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # a constant variable: no correlation is defined
        which = "scores" if np.ptp(y) == 0 else "divergences"
        undefined = dict.fromkeys(("pearson_r", "pearson_p", "spearman_rho", "spearman_p"))
        return {**out, **undefined, "note": f"every language has the same {which}: correlation undefined"}
    pearson, spearman = sps.pearsonr(x, y), sps.spearmanr(x, y)
    return {
        **out,
        "pearson_r": float(pearson.statistic),
        "pearson_p": float(pearson.pvalue),
        "spearman_rho": float(spearman.statistic),
        "spearman_p": float(spearman.pvalue),
    }


def task_and_language_experts(
    task_freq: np.ndarray, lang_freq: dict[str, np.ndarray], ref_freq: np.ndarray, taus: Sequence[float]
) -> dict:
    """Bandarkar et al.'s task experts vs multilingual experts, swept over τ.

    ``Δ_task[l, i] = a_task[l, i] − a_ref[l, i]`` (activation frequency on the task text minus on
    the reference language's general text, e.g. English MGSM vs English FLoRes) and, for each
    other language λ, ``Δ_λ[l, i] = a_λ[l, i] − a_ref[l, i]``. At each τ: task experts
    ``Δ_task > τ``, multilingual experts ``max_λ Δ_λ > τ``, and their intersection (the study
    finds none for τ ≥ 0.3). Returns {``taus``, ``sweep``: [{tau, task, multilingual, overlap
    (lists of [layer, expert]), n_task, n_multilingual, n_overlap}]}."""
    if not lang_freq:
        raise ValueError("multilingual experts need routing statistics of at least one non-reference language")
    d_task = np.asarray(task_freq, np.float64) - ref_freq
    d_lang = np.max(np.stack([np.asarray(f, np.float64) - ref_freq for f in lang_freq.values()]), axis=0)
    sweep = []
    for tau in taus:
        task = {(int(a), int(b)) for a, b in zip(*np.nonzero(d_task > tau), strict=True)}
        multi = {(int(a), int(b)) for a, b in zip(*np.nonzero(d_lang > tau), strict=True)}
        both = task & multi
        sweep.append(
            {
                "tau": float(tau),
                "task": [list(p) for p in sorted(task)],
                "multilingual": [list(p) for p in sorted(multi)],
                "overlap": [list(p) for p in sorted(both)],
                "n_task": len(task),
                "n_multilingual": len(multi),
                "n_overlap": len(both),
            }
        )
    return {"taus": [float(t) for t in taus], "sweep": sweep}
