"""Pipeline stages, one module each; :data:`REGISTRY` lists their :class:`Stage` records in
pipeline order (the only list of stages: the pipeline, launch's validation and sweeps read it)."""

from __future__ import annotations

from rise_jax.stages import (
    analyze,
    arms,
    correlate,
    evaluate,
    export,
    inspect_model,
    pretrain,
    report,
    select,
    stats,
    task_experts,
    train,
)
from rise_jax.stages.registry import Stage

REGISTRY: dict[str, Stage] = {
    s.name: s
    for s in (
        pretrain.STAGE,
        inspect_model.STAGE,
        stats.STAGE,
        analyze.STAGE,
        task_experts.STAGE,
        select.STAGE,
        train.STAGE,
        export.STAGE,
        evaluate.STAGE,
        arms.STAGE,
        correlate.STAGE,
        report.STAGE,
    )
}
