"""Stage ``pretrain``: pretrain a small MoE from scratch on a corpus written here -> ``pretrain/``.

For a run that builds its own model: the demo (the six-language corpus) and the controlled
testbed (cipher languages in a chosen mix, :mod:`rise_jax.testbed`). It writes the corpus, a
tokenizer, the resumable training state and HF checkpoints (``pretrain/steps/<step>/`` at each of
``config.pretrain.save_steps``, ``pretrain/checkpoint/`` at the last step; layout in
:mod:`rise_jax.testbed.pretrain`), which the later stages read through ``config.model.checkpoint``
(``{workdir}/pretrain/checkpoint``, or a step's) and their data paths
(``{workdir}/pretrain/corpus/...``). Interrupted (or stopped by ``config.pretrain.max_steps``), a
rerun resumes from the last saved state; changed settings set this result aside and pretrain
anew (:mod:`rise_jax.pipeline`). While this stage is in ``config.stages`` the other stages'
validation does not look for the checkpoint or corpus it will write
(:func:`~rise_jax.stages.common.checkpoint_pending`).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from rise_jax.errors import SettingError
from rise_jax.stages.registry import Stage
from rise_jax.testbed.pretrain import PretrainOptions, pretrain
from rise_jax.workdir import Workdir


def _max_steps(config: ml_collections.ConfigDict) -> int | None:
    """``config.pretrain.max_steps`` (None for 0: no limit), checked."""
    value = config.pretrain.get("max_steps", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SettingError(f"config.pretrain.max_steps = {value!r}: must be a whole number >= 0 (0 = no limit)")
    return value or None


def validate(config: ml_collections.ConfigDict) -> None:
    PretrainOptions.from_config(config.pretrain)
    _max_steps(config)


def run(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    opts = PretrainOptions.from_config(config.pretrain)
    progress = bool(config.pretrain.get("progress", True))
    return pretrain(wd, opts, progress=progress, max_steps=_max_steps(config))


# Unchained: later stages know the model by the checkpoint's content (Stage.inputs), so a run on
# a real checkpoint never depends on the pretraining settings it does not use.
STAGE = Stage(
    "pretrain",
    ("pretrain",),
    run,
    validate=validate,
    outputs=lambda wd: (wd.pretrain_corpus, wd.pretrain_checkpoint),
    state=lambda wd: (wd.pretrain_state, wd.pretrain_tokenizer, wd.pretrain_curve, wd.pretrain_steps),
    chained=False,
    spmd=False,
)
