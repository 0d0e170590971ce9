"""Selection methods, evaluation task kinds and analysis measures: one registry entry each is enough."""

import json

import ml_collections
import numpy as np
import pytest

from rise_jax.configs import base
from rise_jax.evaluation import tasks
from rise_jax.evaluation.tasks import EvalError
from rise_jax.routing import measures
from rise_jax.routing.stats import RoutingStats
from rise_jax.selection import methods
from rise_jax.selection.algorithms import Selected, SelectionError
from rise_jax.stages import analyze, evaluate
from rise_jax.stages import select as select_stage
from rise_jax.workdir import Workdir

LANGS = ["en", "bn", "sw"]


def _stats(num_layers: int = 4, num_experts: int = 8) -> RoutingStats:
    rng = np.random.default_rng(0)
    shape = (len(LANGS), num_layers, num_experts)
    model = {"model_type": "qwen3_moe", "num_moe_layers": num_layers, "num_experts": num_experts, "top_k": 2}
    counts = rng.integers(0, 50, shape).astype(np.int64)
    tokens = np.full(len(LANGS), 50, np.int64)
    return RoutingStats(LANGS, counts, tokens, rng.random(shape), rng.random(shape), rng.random(shape[:2]), model)


def _first_expert_of_each_layer(x: methods.SelectionInputs, c) -> methods.Choice:
    return methods.Choice([Selected(layer, 0, "shallow", {}) for layer in range(x.num_layers)], {"n": x.num_layers})


def test_a_registered_selection_method_is_selectable_and_listed_in_errors(monkeypatch):
    monkeypatch.setitem(methods.METHODS, "first", methods.Method("first", _first_expert_of_each_layer, takes_k=False))
    c = base.get_base_config().select
    c.method, c.target = "first", "bn"
    artefact = select_stage.select(_stats(), c)
    assert artefact["method"] == "first" and artefact["params"] == {"n": 4}
    assert [(e["layer"], e["expert"]) for e in artefact["experts"]] == [(0, 0), (1, 0), (2, 0), (3, 0)]
    config = base.get_base_config()
    config.select.method = "nope"
    with pytest.raises(SelectionError, match=r"unknown selection method 'nope' .*first"):
        select_stage.validate(config)


def test_a_registered_task_kind_is_validated_by_its_own_check_and_listed_in_errors(monkeypatch):
    def check(task, where):
        if task.get("flavour", "") != "plain":
            raise EvalError(f"{where}.flavour must be plain")

    kind = tasks.TaskKind("echo", lambda ev, task, lang, n: tasks.TaskResult({"score": 1.0}), "score", validate=check)
    monkeypatch.setitem(tasks.TASK_KINDS, "echo", kind)
    config = base.get_base_config()
    config.stages = "pretrain,eval"  # the run makes its checkpoint: the task kind's own check is what is tested
    config.eval.tasks.echo = ml_collections.ConfigDict({"kind": "echo", "flavour": "spicy", "path": ""})
    config.eval.run = "echo"
    with pytest.raises(EvalError, match=r"eval.tasks.echo.flavour must be plain"):
        evaluate.validate(config)
    config.eval.tasks.echo.flavour = "plain"
    evaluate.validate(config)
    config.eval.tasks.echo.kind = "karaoke"
    with pytest.raises(
        EvalError,
        match=r"eval.tasks.echo.kind = 'karaoke'; choose one of .*belebele, translation, polymath, mmlu_prox, routing_divergence, echo",
    ):
        evaluate.validate(config)


def test_a_registered_measure_adds_its_keys_and_figures_to_the_analysis(monkeypatch, tmp_path):
    def busiest(x: measures.AnalysisInputs) -> measures.Measured:
        top = x.freq.sum(axis=2).argmax(axis=1)
        curve = measures.Figure(
            "layer_curves",
            "busiest.png",
            dict(values=x.freq.max(axis=2), languages=x.languages, title="t", ylabel="y"),
        )
        return measures.Measured({"busiest_layer": {lang: int(top[i]) for i, lang in enumerate(x.languages)}}, (curve,))

    monkeypatch.setitem(measures.MEASURES, "busiest", measures.Measure("busiest", busiest))
    wd = Workdir(str(tmp_path))
    stats = _stats()
    stats.save(wd.stats)
    analyze.run(base.get_base_config(), wd)
    result = json.load(open(wd.analysis_json))
    assert list(result)[-1] == "busiest_layer" and set(result["busiest_layer"]) == set(LANGS)
    assert (tmp_path / "analysis" / "busiest.png").is_file() and (
        tmp_path / "analysis" / "overlap_heatmap.png"
    ).is_file()
