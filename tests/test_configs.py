"""The shipped configs: paper settings, `:arg` variants, sweeps, and their errors."""

import os

import pytest

from rise_jax.configs import phi35_moe, qwen3_30b_a3b, sweeps  # noqa: E402
from rise_jax.selection.algorithms import zone_budgets  # noqa: E402


def test_paper_defaults_give_the_papers_zone_budgets():
    q, p = qwen3_30b_a3b.get_config(), phi35_moe.get_config()
    assert (q.select.target, q.select.method, q.select.k) == ("bn", "rise", 128)
    assert zone_budgets(q.select.k, tuple(q.select.ratios), 48, 128) == {"shallow": 44, "middle": 32, "deep": 52}
    assert zone_budgets(p.select.k, tuple(p.select.ratios), 32, 16) == {"shallow": 2, "middle": 11, "deep": 3}
    assert q.train.lr == 2e-5 and q.train.epochs == 3 and q.train.batch_size * q.train.grad_accum == 16
    qa = qwen3_30b_a3b.get_config("recipe=qa")  # the earlier QA recipe, kept as a named variant
    assert qa.train.completion_only and qa.train.data.answer_field == "answers.text.0"
    assert q.eval.run == "mgsm,tydiqa"


# The RISE reference implementation's recipe (init-neok/rise run_rise.sh + configs/*.env +
# rise/data.py + evaluation/opencompass/eval_rise_mgsm.py), field by field.
REFERENCE_RECIPE = {
    "data.source": "hf",
    "data.hf_path": "google-research-datasets/tydiqa",
    "data.hf_name": "secondary_task",
    "data.split": "train",
    "data.hf_filter": "id:{tydiqa}-",
    "data.text_fields": "question,context",
    "data.template": "raw",
    "data.max_samples": 500,
    "data.max_length": 512,
    "stats.batch_size": 4,
    "model.dtype": "bfloat16",
    "train.data.source": "hf",
    "train.data.text_fields": "question,context",
    "train.data.template": "raw",
    "train.data.answer_field": "",
    "train.data.max_samples": 1000,
    "train.data.max_length": 512,
    "train.completion_only": False,
    "train.epochs": 3,
    "train.batch_size": 2,
    "train.grad_accum": 8,
    "train.lr": 2e-5,
    "train.warmup_ratio": 0.05,
    "select.alpha": 10.0,
    "select.zone_ratios": (0.375, 0.25),
    "eval.tasks.mgsm.max_samples": 200,
    "eval.tasks.mgsm.max_new_tokens": 1024,
}


def _get(c, dotted):
    for part in dotted.split("."):
        c = c[part]
    return tuple(c) if isinstance(c, (list, tuple)) else c


@pytest.mark.parametrize("module", [qwen3_30b_a3b, phi35_moe], ids=["qwen3", "phi"])
@pytest.mark.parametrize(
    "arg", ["", "sw", "te,topk,64", "k=32,method=esft_token", "bn,rise,16,gpus=8", "method=random", "sw,lora=8"]
)
def test_every_paper_config_variant_follows_the_reference_recipe(module, arg):
    c = module.get_config(arg)
    for key, want in REFERENCE_RECIPE.items():
        assert _get(c, key) == want, key
    assert c.data.languages == f"{c.select.target},en"  # the target and REFERENCE_LANGS=en only
    assert c.train.data.hf_filter == c.data.hf_filter


def test_the_qa_recipe_variant_keeps_the_earlier_settings():
    for module in (qwen3_30b_a3b, phi35_moe):
        c = module.get_config("sw,recipe=qa")
        assert (c.data.languages, c.data.max_samples, c.data.template) == ("ar,bn,en,fi,id,ko,ru,sw,te", 1000, "chat")
        assert (c.data.text_fields, c.train.data.template, c.train.completion_only) == (
            "context,question",
            "chat",
            True,
        )
        assert c.select.target == "sw" and c.eval.tasks.mgsm.max_samples == 0
    with pytest.raises(ValueError, match="recipe 'paper' not one of reference, qa"):
        qwen3_30b_a3b.get_config("recipe=paper")


@pytest.mark.parametrize(
    "arg,expected",
    [
        ("sw", ("sw", "rise", 128)),
        ("bn,topk,64", ("bn", "topk", 64)),
        ("k=32,method=esft_token", ("bn", "esft_token", 32)),
    ],
)
def test_arg_variants(arg, expected):
    c = qwen3_30b_a3b.get_config(arg)
    assert (c.select.target, c.select.method, c.select.k) == expected


def test_the_lora_variant_trains_adapters_inside_the_selected_experts():
    for module in (qwen3_30b_a3b, phi35_moe):
        c = module.get_config("bn,rise,lora=16")
        assert (c.train.method, c.train.lora_rank, c.train.lora_alpha, c.select.method) == (
            "rise_lora",
            16,
            16.0,
            "rise",
        )
        assert module.get_config("bn").train.method == "experts"
        c = module.get_config("bn,train=lora")
        assert (c.train.method, c.train.lora_rank) == ("lora", 8)
    with pytest.raises(ValueError, match="train 'qlora' not one of experts, rise_lora, lora"):
        qwen3_30b_a3b.get_config("train=qlora")
    with pytest.raises(ValueError, match="lora rank -1 must be >= 1"):
        qwen3_30b_a3b.get_config("lora=-1")


def test_bad_arg_variants_are_clear():
    with pytest.raises(ValueError, match="method 'best' not one of"):
        qwen3_30b_a3b.get_config("bn,best")
    with pytest.raises(ValueError, match="unknown field 'lr'"):
        phi35_moe.get_config("lr=3")


def test_every_sweep_point_names_a_real_config_field():
    from rise_jax.sweep import apply_overrides

    c = qwen3_30b_a3b.get_config()
    for name in sweeps.SWEEPS:
        for point in sweeps.get_sweep(name):
            apply_overrides(c, point)
    with pytest.raises(KeyError, match="no config field 'alpah'"):
        apply_overrides(c, {"select.alpah": 1.0})
    with pytest.raises(ValueError, match="unknown sweep"):
        sweeps.get_sweep("lr")


def test_multi_gpu_presets_set_the_mesh():
    assert qwen3_30b_a3b.get_config().mesh.model == 1
    q8 = qwen3_30b_a3b.get_config("bn,rise,128,gpus=8").mesh
    assert (q8.data, q8.model, q8.expert_parallel) == (1, 8, True)
    assert phi35_moe.get_config("gpus=2").mesh.model == 2
    p8 = phi35_moe.get_config("gpus=8,data=2").mesh  # 2 batch groups x 4 devices of 4 experts each
    assert (p8.data, p8.model) == (2, 4)
    with pytest.raises(ValueError, match="data=3 must divide gpus=8"):
        phi35_moe.get_config("gpus=8,data=3")


def test_sweep_points_share_the_statistics_and_analysis_directories_by_hard_link(tmp_path):
    from rise_jax.sweep import share_stages
    from rise_jax.workdir import Workdir

    src, dst = Workdir(str(tmp_path / "a")), Workdir(str(tmp_path / "b"))
    for path in (src.stats_arrays, src.stats_summary, src.analysis_json, src.table2, src.path("analysis", "x.png")):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").write(path)
    os.makedirs(src.records)
    for stage in ("stats", "analyze"):
        open(src.record(stage), "w").write("{}")
    share_stages(src.root, dst.root)
    for path in (dst.stats_arrays, dst.table2, dst.path("analysis", "x.png"), dst.record("analyze")):
        assert os.path.isfile(path)
    assert os.path.samefile(src.path("analysis", "x.png"), dst.path("analysis", "x.png"))


def test_the_new_family_configs_load_with_their_presets():
    from rise_jax.configs import gpt_oss_20b, olmoe, qwen15_moe

    g, o, q = gpt_oss_20b.get_config(), olmoe.get_config("sw,topk,16"), qwen15_moe.get_config()
    assert g.model.checkpoint == "openai/gpt-oss-20b" and g.select.k == 24
    assert g.eval.steer.layers == "4-19"  # the companion study's middle layers (0-indexed)
    assert o.model.checkpoint == "allenai/OLMoE-1B-7B-0924" and (o.select.target, o.select.method, o.select.k) == (
        "sw",
        "topk",
        16,
    )
    assert o.data.template == o.train.data.template == "raw"  # a base model without a chat template
    assert q.model.checkpoint == "Qwen/Qwen1.5-MoE-A2.7B-Chat" and q.select.k == 48


def _summary(points, values):
    """A sweep summary as run_sweep writes it: base/trained perplexity for en and bn per point."""
    return [
        {
            "overrides": o,
            "workdir": f"/w/{i}",
            "results": None
            if v is None
            else {
                variant: {"perplexity": {lang: {"perplexity": v + d, "n": 3} for lang, d in (("en", 0.0), ("bn", 1.0))}}
                for variant, v in (("base", 10.0), ("trained", v))
            },
        }
        for i, (o, v) in enumerate(zip(points, values, strict=True))
    ]


def test_sweeps_plot_each_tasks_metric_over_numeric_and_categorical_points(tmp_path):
    from rise_jax.sweep import _axis, sweep_markdown, sweep_plots

    alpha = _summary([{"select.alpha": a} for a in (0.0, 1.0, 10.0)], [9.0, None, 8.0])
    assert _axis(alpha) == (["0", "1", "10"], "select.alpha", [0.0, 1.0, 10.0])
    files = sweep_plots(alpha, str(tmp_path))
    assert files == ["sweep_perplexity_perplexity.png"]
    assert (tmp_path / files[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = sweep_markdown(alpha, files)
    assert md.splitlines()[3] == "| alpha=1.0 | – | – | – | – |"  # the point without results
    assert md.rstrip().endswith("![sweep_perplexity_perplexity](sweep_perplexity_perplexity.png)")
    ratios = _summary([{"select.ratios": r} for r in ((0.35, 0.25, 0.4), (1 / 3, 1 / 3, 1 / 3))], [9.0, 9.5])
    assert _axis(ratios) == (["(0.35, 0.25, 0.4)", "(0.333, 0.333, 0.333)"], "select.ratios", None)
    zones = _summary([{"select.zones": "middle"}, {"select.zones": "shallow,deep"}], [9.0, 9.5])
    assert _axis(zones) == (["middle", "shallow,deep"], "select.zones", None)
    assert sweep_plots(zones, str(tmp_path / "z")) == ["sweep_perplexity_perplexity.png"]
    mixed = _summary([{"select.k": 8}, {"select.k": 8, "select.alpha": 1.0}], [9.0, 9.5])
    assert _axis(mixed)[1:] == ("point", None)
    assert sweep_plots(_summary([{"select.k": 8}], [None]), str(tmp_path / "none")) == []  # no eval: no plot


def test_multilingual_presets_validate_and_run_each_task_on_the_replayed_languages_it_has():
    """configs/multilingual.py (``study``, ``broad``) and bandarkar.py (the study preset): every
    task's languages are the replay set's that its dataset publishes, resolved by the eval stage
    (so narrowing ``data.languages`` narrows them), and the whole config validates."""
    from fixture_data import FLORES, MGSM

    from rise_jax import launch
    from rise_jax.configs import bandarkar, multilingual
    from rise_jax.evaluation import coverage, mmlu_prox, multilingual_mc, polymath
    from rise_jax.stages.evaluate import task_languages

    broad = multilingual.get_config("broad")
    langs = {name: task_languages(broad, name) for name in broad.eval.run.split(",")}
    replay = broad.data.languages.split(",")
    assert langs["xcopa"] == [x for x in replay if x in multilingual_mc.XCOPA_CONNECTORS]
    assert langs["polymath"] == [x for x in replay if x in polymath.LANGUAGES]
    assert langs["mmlu_prox"] == [x for x in replay if x in mmlu_prox.LANGUAGES]
    assert "en" not in langs["include"] and "en" not in langs["flores_en_xx"] and langs["belebele"] == replay
    assert (broad.correlate.tasks, broad.correlate.mean) == ("", "global_mmlu,mmlu_prox,include")
    assert set(multilingual.BROAD_LANGUAGES) >= {"sw", "bn", "te", "th", "zh", "ar"}
    for config in (broad, multilingual.get_config("study"), bandarkar.get_config("qwen3")):
        config.model.checkpoint = "Qwen/Qwen3-30B-A3B"  # a hub id: nothing local to read
        config.data.path = config.task_experts.data.path = FLORES
        config.task_experts.data.path = config.eval.tasks.mgsm.path = MGSM
        config.data.languages = "en,bn,sw,de,zh"  # the fixture's FLoRes languages
        assert launch.validate_only(config)
        for name in config.eval.run.split(","):
            assert config.eval.tasks[name].languages == coverage.REPLAY
            assert set(task_languages(config, name)) <= {"en", "bn", "sw", "de", "zh"}, name
    assert task_languages(broad, "xstorycloze") == ["en", "sw", "zh"]
    broad.data.languages = "en,fi"
    with pytest.raises(Exception, match="eval task xcopa has none of the replayed languages .en, fi.; it has et,"):
        launch.validate_only(broad)
    with pytest.raises(ValueError, match="choose one of study, broad"):
        multilingual.get_config("wide")
