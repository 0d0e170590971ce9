"""Evaluation presets over the multilingual tasks, each task run on the languages it shares with
the replay set: its ``languages`` is ``"replay"``, which the eval stage resolves from
``config.data.languages`` and the dataset's own language table
(:mod:`rise_jax.evaluation.coverage`), so every scored language is also a point of the
performance ↔ routing-alignment correlation, and ``--config.data.languages`` narrows both.

* ``study`` — the companion study's evaluation (Bandarkar et al., arXiv 2510.04694): MGSM and
  Belebele, Belebele accuracy correlated with middle-layer divergence (``configs/bandarkar.py``
  uses it); its replay set is MGSM's languages.
* ``broad`` — a broad multilingual sweep: knowledge (Global-MMLU, MMLU-ProX, INCLUDE), reasoning
  (PolyMath, MGSM, XCOPA, XNLI, XStoryCloze, Global-PIQA), reading (Belebele) and FLORES-200
  translation both ways; correlate takes every task and the mean of the three knowledge tasks.
  Its replay set is :data:`BROAD_LANGUAGES`: every language at least three of the
  language-listed tasks publish.

``python -m rise_jax.launch --config=configs/multilingual.py:broad --config.model.checkpoint=...``
(``:study`` / ``:broad``) with the data paths, or ``apply_preset(config, "broad")`` on a model
config.
"""

from __future__ import annotations

import ml_collections

from rise_jax.configs.base import get_base_config
from rise_jax.data.languages import mgsm_languages
from rise_jax.evaluation import coverage


def _broad_languages(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """Every language at least three of ``tasks``' language tables list, most-covered first."""
    base = get_base_config().eval.tasks
    counts: dict[str, int] = {}
    for name in tasks:
        for lang in coverage.published_languages(base[name]) or ():
            counts[lang] = counts.get(lang, 0) + 1
    return tuple(sorted((lang for lang, n in counts.items() if n >= 3), key=lambda lang: (-counts[lang], lang)))


KNOWLEDGE = ("global_mmlu", "mmlu_prox", "include")
PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "study": {"tasks": ("mgsm", "belebele"), "correlate": ("belebele",), "mean": ()},
    "broad": {
        "tasks": (
            *KNOWLEDGE,
            "polymath",
            "mgsm",
            "xcopa",
            "xnli",
            "xstorycloze",
            "global_piqa",
            "belebele",
            "flores_en_xx",
            "flores_xx_en",
        ),
        "correlate": (),  # every task evaluated
        "mean": KNOWLEDGE,
    },
}
BROAD_LANGUAGES = _broad_languages(PRESETS["broad"]["tasks"])


def apply_preset(c: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
    """Set ``eval.run``, every task's ``languages = "replay"`` and the correlation of ``preset``
    on ``c`` (the replay set, ``c.data.languages``, is left as it is)."""
    if preset not in PRESETS:
        raise ValueError(f"evaluation preset {preset!r}: choose one of {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    for name in spec["tasks"]:
        c.eval.tasks[name].languages = coverage.REPLAY
    c.eval.run = ",".join(spec["tasks"])
    c.correlate.tasks = ",".join(spec["correlate"])
    c.correlate.mean = ",".join(spec["mean"])
    return c


def get_config(arg: str = "broad") -> ml_collections.ConfigDict:
    """A run of ``arg`` (``study`` | ``broad``) on the base config: FLoRes-200 dev replayed
    (parallel, for the divergence) on the preset's languages, then eval, correlate and report;
    set ``model.checkpoint`` and the data paths."""
    name = arg or "broad"
    if name not in PRESETS:
        raise ValueError(f"configs/multilingual.py:{arg}: choose one of {', '.join(PRESETS)}")
    c = get_base_config()
    c.stages = "stats,analyze,eval,correlate,report"
    c.data.source, c.data.path, c.data.split = "flores", "data/flores200", "dev"
    c.stats.divergence = True
    c.eval.variants = "base"
    c.data.languages = ",".join(BROAD_LANGUAGES if name == "broad" else mgsm_languages())
    return apply_preset(c, name)
