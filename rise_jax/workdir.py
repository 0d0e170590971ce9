"""The map of a run's workdir: every artefact path, spelled once.

Stages, the report, sweeps and tests ask a :class:`Workdir` for paths instead of joining strings,
so moving an artefact is a one-line change here. Layout (each artefact's keys are documented by
the module that writes it)::

    <root>/
      .rise/<stage>.json          pipeline records: fingerprint, config, status, output hashes (rise_jax.pipeline)
      .rise/lock                  the running launch's pid, host, start time (rise_jax.workdir_lock)
      .rise/kept/<stage>/<fp>/    earlier results of a stage, restored when their config comes back
      .rise/results/eval/         every eval result (<sha256 of its inputs>.json, .jsonl generations)
      inspect.json  params/       inspect: model description, optional orbax params
      pretrain/                   pretrain (rise_jax.testbed.pretrain): corpus/ (the text the later stages
                                  read), tokenizer/, state/ (orbax, resumable), loss_curve.json,
                                  steps/<step>/ and checkpoint/ (HF checkpoints: chosen steps, the last)
      routing_stats/              stats: stats.npz + summary.json (rise_jax.routing.stats)
      analysis/                   analyze: analysis.json, table2.md, PNGs;
                                  correlate: correlation.json, correlation.md, correlation_<task>.png;
                                  task_experts: task_experts.json, task_experts.md, task_experts.png
      task_routing/               task_experts: routing statistics of the task corpus (stats.npz + summary.json)
      selection.json  selection_map.png   select (rise_jax.selection.artefact)
      train/                      train: experts/ (orbax), checkpoints/, summary.json, metrics.jsonl,
                                  tensorboard/, selection.json, train_config.json
      export/hf/                  export: merged HF checkpoint
      export/peft/                export (train.method=lora): the adapters in PEFT's format
      eval/                       eval: results.json, table.md,
                                  generations/<variant>/<task>/<lang>.jsonl (generative tasks)
      arms/                       arms: arms.json, arms.md, alignment.json + PNGs; one
                                  workdir per arm trained here (<index>_<label>/)
      report.md  report.html  report_*.png     report
"""

from __future__ import annotations

import dataclasses
import os


def _at(*parts: str) -> property:
    """A read-only property: the path ``parts`` under the workdir root."""
    return property(lambda self: os.path.join(self.root, *parts), doc="<root>/" + "/".join(parts))


@dataclasses.dataclass(frozen=True)
class Workdir:
    """Paths of every artefact under ``root`` (nothing is created here)."""

    root: str

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def record(self, stage: str) -> str:
        """The pipeline record of ``stage``."""
        return self.path(".rise", f"{stage}.json")

    records = _at(".rise")
    # inspect
    inspect = _at("inspect.json")
    params = _at("params")
    # pretrain (the demo's model and the testbed's)
    pretrain = _at("pretrain")
    pretrain_corpus = _at("pretrain", "corpus")
    pretrain_tokenizer = _at("pretrain", "tokenizer")
    pretrain_state = _at("pretrain", "state")
    pretrain_curve = _at("pretrain", "loss_curve.json")
    pretrain_steps = _at("pretrain", "steps")
    pretrain_checkpoint = _at("pretrain", "checkpoint")

    def pretrain_step(self, step: int) -> str:
        """The HF checkpoint that ``pretrain`` saved at ``step``."""
        return os.path.join(self.pretrain_steps, str(step))

    # stats / analyze / select
    stats = _at("routing_stats")
    stats_arrays = _at("routing_stats", "stats.npz")
    stats_summary = _at("routing_stats", "summary.json")
    analysis = _at("analysis")
    analysis_json = _at("analysis", "analysis.json")
    table2 = _at("analysis", "table2.md")
    correlation = _at("analysis", "correlation.json")
    task_routing = _at("task_routing")
    task_experts = _at("analysis", "task_experts.json")
    task_experts_table = _at("analysis", "task_experts.md")
    correlation_table = _at("analysis", "correlation.md")
    selection = _at("selection.json")
    selection_map = _at("selection_map.png")
    # train (its own sub-layout: rise_jax.training.artefacts)
    train = _at("train")
    train_summary = _at("train", "summary.json")
    train_selection = _at("train", "selection.json")  # the selection the trained experts came from
    train_config = _at("train", "train_config.json")
    # export / eval / report
    export = _at("export")
    export_hf = _at("export", "hf")
    export_peft = _at("export", "peft")
    eval = _at("eval")
    eval_results = _at("eval", "results.json")
    eval_table = _at("eval", "table.md")
    eval_generations = _at("eval", "generations")
    eval_store = _at(".rise", "results", "eval")  # every eval result by the SHA-256 of its inputs

    def generations(self, variant: str, task: str, language: str) -> str:
        """The saved generations of one generative eval task (JSONL, one example a line)."""
        return os.path.join(self.eval_generations, variant, task, f"{language}.jsonl")

    # arms
    arms = _at("arms")
    arms_summary = _at("arms", "arms.json")
    arms_table = _at("arms", "arms.md")
    arms_alignment = _at("arms", "alignment.json")
    report = _at("report.md")
    report_html = _at("report.html")
