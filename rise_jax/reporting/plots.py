"""Matplotlib figures (PNG, titled and labelled so they read without the code)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from rise_jax.distributed import is_writer  # noqa: E402
from rise_jax.io_utils import publish  # noqa: E402
from rise_jax.zones import COLOURS as ZONE_COLOURS  # noqa: E402
from rise_jax.zones import DEFAULT_RATIOS, zone_ranges  # noqa: E402


def _save(fig, path: str) -> str:
    if not is_writer():  # a multi-process job draws its figures once
        plt.close(fig)
        return path
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=directory)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        publish(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _integer_ticks(axis, count: int) -> None:
    """Ticks on whole ids only (experts, layers): every id up to 12 of them, else a few integers."""
    if count <= 12:
        axis.set_ticks(range(count))
    else:
        axis.set_major_locator(MaxNLocator(integer=True))


def _legend_outside(ax, **kwargs) -> None:
    """The legend right of the axes, where it covers no data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def _shade_zones(ax, num_layers: int, zone_ratios: tuple[float, float]) -> None:
    for name, (lo, hi) in zone_ranges(num_layers, zone_ratios).items():
        if hi > lo:
            ax.axvspan(lo - 0.5, hi - 0.5, color=ZONE_COLOURS[name], alpha=0.12, label=f"{name} ({lo}-{hi - 1})")


def overlap_heatmap(matrix: np.ndarray, languages: Sequence[str], path: str, title: str) -> str:
    n = len(languages)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.55 * n))
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(n), languages)
    ax.set_yticks(range(n), languages)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{matrix[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="w" if matrix[i, j] < 0.6 else "k",
            )
    fig.colorbar(im, ax=ax, label="Jaccard similarity")
    ax.set_title(title)
    return _save(fig, path)


def layer_curves(
    values: np.ndarray,
    languages: Sequence[str],
    path: str,
    title: str,
    ylabel: str,
    zone_ratios: tuple[float, float] = DEFAULT_RATIOS,
) -> str:
    """One line per language over MoE layers, zones shaded."""
    num_layers = values.shape[1]
    fig, ax = plt.subplots(figsize=(7, 4))
    _shade_zones(ax, num_layers, zone_ratios)
    for lang, row in zip(languages, values, strict=True):
        ax.plot(range(num_layers), row, marker="o", ms=3, label=lang)
    ax.set_xlabel("MoE layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xlim(-0.5, num_layers - 0.5)
    _integer_ticks(ax.xaxis, num_layers)
    _legend_outside(ax, fontsize=7)
    return _save(fig, path)


def scatter(
    x: Sequence[float], y: Sequence[float], labels: Sequence[str], path: str, title: str, xlabel: str, ylabel: str
) -> str:
    """A labelled scatter plot (one point per language) with its least-squares line."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(x, y, s=22)
    for xi, yi, label in zip(x, y, labels, strict=True):
        ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=8)
    if len(set(x)) > 1:
        slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
        xs = np.linspace(min(x), max(x), 20)
        ax.plot(xs, slope * xs + intercept, lw=1, color="grey")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def loss_curves(
    series: dict[str, Sequence[tuple[float, float]]], path: str, title: str, xlabel: str, ylabel: str
) -> str:
    """One line per series of ``(x, y)`` points (training and held-out loss over steps); a
    series of many points is drawn without markers."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, points in series.items():
        xs, ys = zip(*points, strict=True) if points else ((), ())
        ax.plot(xs, ys, marker="o" if len(xs) <= 40 else None, ms=3, lw=1.4, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def tau_sweep(taus: Sequence[float], counts: dict[str, Sequence[int]], path: str, title: str) -> str:
    """Expert-set sizes against the threshold τ, one line per set."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, values in counts.items():
        ax.plot(taus, values, marker="o", ms=3, label=name)
    ax.set_xlabel("τ (activation-frequency difference)")
    ax.set_ylabel("experts (layer, expert)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


ACTIVATION_LABEL = "activation frequency (share of tokens)"


def activation_heatmap(freq: np.ndarray, path: str, title: str, vmax: float = 1.0) -> str:
    """Layers x experts activation frequency of one language on the scale 0..``vmax`` (default:
    the whole range of a share of tokens), the same for every language's figure so they compare;
    :func:`activation_heatmaps` draws them all on one figure."""
    num_layers, num_experts = freq.shape
    fig, ax = plt.subplots(figsize=(min(16, 2 + num_experts * 0.12), min(10, 1.5 + num_layers * 0.25)))
    im = ax.imshow(freq, aspect="auto", cmap="magma", interpolation="nearest", vmin=0.0, vmax=vmax)
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    _integer_ticks(ax.xaxis, num_experts)
    _integer_ticks(ax.yaxis, num_layers)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=ACTIVATION_LABEL)
    return _save(fig, path)


def activation_heatmaps(freqs: np.ndarray, languages: Sequence[str], path: str, title: str, columns: int = 3) -> str:
    """Every language's layers x experts activation frequency (``freqs[i]`` = ``languages[i]``'s
    ``[L, E]``) side by side on one colour scale, 0 to the largest frequency, with one colorbar."""
    n, num_layers, num_experts = freqs.shape
    cols = min(columns, n)
    rows = -(-n // cols)
    w = min(5.5, 1.2 + num_experts * 0.12)
    h = min(4.0, 0.9 + num_layers * 0.22)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols + 1.0, h * rows + 0.6), squeeze=False, layout="constrained")
    vmax = float(np.max(freqs)) if freqs.size else 1.0
    im = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        im = ax.imshow(freqs[i], aspect="auto", cmap="magma", interpolation="nearest", vmin=0.0, vmax=vmax)
        ax.set_title(languages[i], fontsize=10)
        _integer_ticks(ax.yaxis, num_layers)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
        if i % cols == 0:
            ax.set_ylabel("MoE layer")
        if i // cols == rows - 1 or i + cols >= n:
            ax.set_xlabel("expert")
    fig.colorbar(im, ax=axes, label=ACTIVATION_LABEL, shrink=0.9)
    fig.suptitle(title)
    return _save(fig, path)


def selection_map(
    num_layers: int, num_experts: int, cells: Sequence[tuple[int, int, str]], path: str, title: str
) -> str:
    """Layers x experts grid with the selected experts coloured by zone."""
    grid = np.zeros((num_layers, num_experts), np.int32)
    codes = {"shallow": 1, "middle": 2, "deep": 3}
    for layer, expert, zone in cells:
        grid[layer, expert] = codes[zone]
    cmap = ListedColormap(["#F2F2F2", ZONE_COLOURS["shallow"], ZONE_COLOURS["middle"], ZONE_COLOURS["deep"]])
    fig, ax = plt.subplots(figsize=(min(16, 2.5 + num_experts * 0.15), min(10, 1.5 + num_layers * 0.25)))
    ax.imshow(grid, aspect="auto", cmap=cmap, vmin=0, vmax=3, interpolation="nearest")
    ax.set_xlabel("expert")
    ax.set_ylabel("MoE layer")
    _integer_ticks(ax.xaxis, num_experts)
    _integer_ticks(ax.yaxis, num_layers)
    ax.set_title(title)
    counts = {z: sum(1 for c in cells if c[2] == z) for z in codes}
    ax.legend(
        handles=[Patch(color=ZONE_COLOURS[z], label=f"{z}: {counts[z]}") for z in codes],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
    )
    return _save(fig, path)


def _grouped_bars(ax, values: dict[str, dict[str, float]], groups: Sequence[str]) -> None:
    """One group of bars per ``groups`` entry, one bar per key of ``values`` (a missing value: no bar)."""
    settings = list(values)
    width = 0.8 / max(1, len(settings))
    x = np.arange(len(groups))
    for j, s in enumerate(settings):
        ys = [np.nan if values[s].get(g) is None else values[s][g] for g in groups]
        ax.bar(x + (j - (len(settings) - 1) / 2) * width, ys, width, label=s)
    ax.set_xticks(x, list(groups))


def results_bars(
    values: dict[str, dict[str, float]], languages: Sequence[str], path: str, title: str, ylabel: str
) -> str:
    """Grouped bars: one group per language, one bar per setting (``values[setting][lang]``)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(languages) + 1), 3.6))
    _grouped_bars(ax, values, languages)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _legend_outside(ax, fontsize=8)
    return _save(fig, path)


def sweep_plot(
    points: Sequence[str],
    series: dict[str, Sequence[float | None]],
    path: str,
    title: str,
    xlabel: str,
    ylabel: str,
    x: Sequence[float] | None = None,
) -> str:
    """A result over the points of a sweep (the RISE paper's Fig. 3-4), one line or bar per
    series (``series[name][i]`` = the value at point ``i``, None where it has none). With numeric
    ``x`` (α, K): lines over x, a log₂ axis when x spans 8x or more; otherwise (budget ratios ρ,
    layer-group ablations, methods): grouped bars, one group per point."""
    if x is not None:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for name, ys in series.items():
            ax.plot(x, [np.nan if y is None else y for y in ys], marker="o", ms=4, label=name)
        if min(x) > 0 and max(x) >= 8 * min(x):
            ax.set_xscale("log", base=2)
        ax.set_xticks(list(x), [str(p) for p in points])
    else:
        fig, ax = plt.subplots(figsize=(max(5.5, 1.2 * len(points) + 1), 3.8))
        _grouped_bars(ax, {name: dict(zip(points, ys, strict=True)) for name, ys in series.items()}, points)
        ax.tick_params(axis="x", labelrotation=20)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _save(fig, path)


def panel_curves(
    panels: dict[str, dict[str, Sequence[tuple[float, float]]]],
    path: str,
    title: str,
    xlabel: str,
    ylabel: str,
    level: float | None = None,
    log_x: bool = False,
) -> str:
    """One panel per group (a sweep point), one line per series of ``(x, y)`` points in it (a
    language: the same colour in every panel), shared axes; ``level``: a dashed horizontal line."""
    names = list(dict.fromkeys(n for series in panels.values() for n in series))
    colours = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.2, 3.4), sharey=True, squeeze=False)
    for ax, (panel, series) in zip(axes[0], panels.items(), strict=True):
        for name, points in series.items():
            xs, ys = zip(*points, strict=True) if points else ((), ())
            ax.plot(xs, ys, marker="o", ms=3, lw=1.4, color=colours[name], label=name)
        if level is not None:
            ax.axhline(level, color="grey", lw=1, ls="--")
        if log_x:
            ax.set_xscale("log", base=2)
            ticks = sorted({x for points in series.values() for x, _ in points})
            ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
            ax.minorticks_off()
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    _legend_outside(axes[0][-1], fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
