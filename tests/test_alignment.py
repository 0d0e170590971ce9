"""Routing alignment (``train.align_weight``) and router training (``train.method=routers``,
``experts+routers``): the term against NumPy on captured routing, its gradient against finite
differences, zero on identical text, exact isolation of every method on two families, the export."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fixture_data import FLORES, TINY_VOCAB
from hf_reference import hf_forward, load_hf_model, make_hf_model, padded_batch, save_hf_model
from tiny_pipeline import tiny_config

import rise_jax
from rise_jax.configs.sweeps import get_sweep
from rise_jax.models.layout import moe_layer_location
from rise_jax.routing.analysis import entropy_normalised_jsd
from rise_jax.sweep import run_sweep
from rise_jax.training.alignment import Alignment, resolve_layers
from rise_jax.training.artefacts import load_trained_experts, save_trained_experts
from rise_jax.training.methods import ExpertsRouters, FullExperts, Routers
from rise_jax.training.methods.routers import ROUTERS
from rise_jax.training.step import make_steps

SELECTED = [(0, 1), (1, 5), (2, 3)]


def bits(x):
    x = np.asarray(x)
    return x.view(np.uint32) if x.dtype == np.float32 else x


@pytest.fixture(scope="module")
def qwen(qwen_dir):
    """The tiny Qwen3-MoE with its routers sharpened x8: a random tiny router is almost flat, where
    the entropy-normalised JS (its denominator ln E − H near 0) is ill-conditioned in fp32."""
    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    moe = params["layers"]["moe"]
    return model, {**params, "layers": {**params["layers"], "moe": {**moe, "router": moe["router"] * 8}}}


def _pairs(vocab, seed=0):
    """Two ragged batches (target rows, their 'translations'), right-padded, one empty reference row."""
    rng = np.random.RandomState(seed)
    ids, ref = rng.randint(1, vocab, (3, 9)).astype(np.int32), rng.randint(1, vocab, (3, 9)).astype(np.int32)
    mask, ref_mask = np.ones_like(ids), np.ones_like(ref)
    mask[1, 6:], ref_mask[0, 4:], ref_mask[2, :] = 0, 0, 0
    return (jnp.asarray(a) for a in (ids, mask, ref, ref_mask))


def _numpy_mean_probs(logits, mask):
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    m = np.asarray(mask, np.float64)
    return np.einsum("lbte,bt->lbe", p, m) / np.maximum(m.sum(1), 1)[None, :, None]


def test_the_term_equals_numpy_on_captured_routing_and_vanishes_on_identical_text(qwen):
    model, params = qwen
    ids, mask, ref, ref_mask = _pairs(model.cfg.vocab_size)
    route = jax.jit(lambda i, m: model.apply({"params": params}, i, m, return_routing=True).routing.router_logits)
    z_tgt, z_ref = route(ids, mask), route(ref, ref_mask)
    layers = (0, 2)
    p = _numpy_mean_probs(z_tgt, mask)[list(layers)]
    q = _numpy_mean_probs(z_ref, ref_mask)[list(layers)]
    pairs = [0, 1]  # row 2's reference is empty: no pair
    want = {
        "kl": np.mean([np.sum(q[lay, i] * (np.log(q[lay, i]) - np.log(p[lay, i]))) for lay in range(2) for i in pairs]),
        "js": np.mean([entropy_normalised_jsd(p[lay, i], q[lay, i]) for lay in range(2) for i in pairs]),
    }
    for kind, value in want.items():
        align = Alignment(1.0, kind, layers)
        got = align.term(z_tgt, mask, align.distributions(z_ref, ref_mask), ref_mask)
        assert value > 1e-4 and abs(float(got) - value) < 1e-6, (kind, float(got), value)
        same = align.term(z_tgt, mask, align.distributions(z_tgt, mask), mask)
        assert float(same) == 0.0, kind

    # Through the training step: the objective on a pair of identical texts is the LM loss alone.
    aligned, _, held_out = make_steps(model, optax.sgd(0.0), Alignment(5.0, "kl", (1,)))
    trainable = Routers.init(params, model.cfg, (1,))
    key = jax.random.PRNGKey(0)
    total, count = held_out(trainable, params, ids, mask, mask)  # the NLL alone
    lm = float(total) / float(count)
    both, _, _ = aligned(trainable, params, ids, mask, mask, key, (ids, mask))
    assert abs(float(both) - lm) < 1e-6
    different, _, _ = aligned(trainable, params, ids, mask, mask, key, (ref, ref_mask))
    assert float(different) > lm + 1e-3


@pytest.mark.parametrize("kind", ["kl", "js"])
def test_the_gradient_matches_finite_differences(qwen, kind):
    """The training step's gradient of the alignment term ``w·A`` (the router of layer 1 trainable,
    its routing aligned; the NLL masked out) along a random direction equals the central difference
    of the term with the English side held at its value. (The NLL, and a later layer's term, move by
    steps where an expert enters or leaves a token's top-k, and the tiny model's routers are nearly
    flat: no finite difference follows those; the NLL's gradient has its own HF check.)"""
    model, params = qwen
    ids, mask, ref, ref_mask = _pairs(model.cfg.vocab_size, seed=1)
    align = Alignment(3.0, kind, (1,))
    trainable = Routers.init(params, model.cfg, (1,))
    grad_step, *_ = make_steps(model, optax.sgd(0.0), align)
    reference = align.distributions(
        model.apply({"params": params}, ref, ref_mask, return_routing=True).routing.router_logits, ref_mask
    )

    @jax.jit
    def objective(weights, loss_mask):
        out = model.apply(
            {"params": trainable.replace(weights=weights).model_params(params)}, ids, mask, return_routing=True
        )
        total, count = rise_jax.models.lm_loss.lm_loss_sums(out.logits, ids, loss_mask)
        return total / jnp.maximum(count, 1.0) + align.weight * align.term(
            out.routing.router_logits, mask, reference, ref_mask
        )

    direction = jax.tree_util.tree_map(
        lambda w: jax.random.normal(jax.random.PRNGKey(3), w.shape, jnp.float32), trainable.weights
    )
    loss_mask = jnp.zeros_like(mask)  # the alignment term alone
    _, _, grads = grad_step(trainable, params, ids, mask, loss_mask, jax.random.PRNGKey(0), (ref, ref_mask))
    leaves = zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction), strict=True)
    analytic = sum(float(jnp.vdot(g, d)) for g, d in leaves)
    eps = 1e-3
    shifted = [jax.tree_util.tree_map(lambda w, d, s=s: w + s * eps * d, trainable.weights, direction) for s in (1, -1)]
    numeric = (float(objective(shifted[0], loss_mask)) - float(objective(shifted[1], loss_mask))) / (2 * eps)
    assert abs(analytic) > 1e-3 and abs(analytic - numeric) < 5e-3 * abs(analytic), (analytic, numeric)


def test_middle_zone_is_the_default_layer_set_and_bad_layers_are_named():
    assert resolve_layers("", 12) == (4, 5, 6, 7)
    assert resolve_layers("1,3-4", 8) == (1, 3, 4)
    with pytest.raises(ValueError, match=r"align_layers is empty and the middle zone of 4 MoE layers"):
        resolve_layers("", 4)
    with pytest.raises(ValueError, match=r"router_layers = '9': MoE layers \[9\] out of range \[0, 8\)"):
        resolve_layers("9", 8, where="config.train.router_layers")


def test_alignment_with_packed_rows_is_refused_naming_both_settings():
    from tiny_pipeline import tiny_config

    from rise_jax.errors import SettingError
    from rise_jax.stages import train as train_stage

    c = tiny_config("/no/checkpoint")
    c.train.align_weight, c.train.pack = 0.5, True
    with pytest.raises(SettingError, match=r"train.align_weight > 0 with config.train.pack = True"):
        train_stage.validate(c)


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory):
    """Tiny DeepSeek-V3: a dense first layer (two scanned runs), sigmoid router with a selection-only
    bias and expert groups, a shared expert."""
    path = save_hf_model(make_hf_model("deepseek_v3"), str(tmp_path_factory.mktemp("dsv3")))
    return rise_jax.load_model(path, dtype="float32", progress=False)


def _one_step(model, params, trainable, align):
    grad_step, apply_step, _ = make_steps(model, optax.adam(1e-2), align)
    ids, mask, ref, ref_mask = _pairs(model.cfg.vocab_size, seed=2)
    _, _, grads = grad_step(trainable, params, ids, mask, mask, jax.random.PRNGKey(0), (ref, ref_mask))
    weights, _, _ = apply_step(trainable.weights, optax.adam(1e-2).init(trainable.weights), grads, 1.0)
    return trainable.replace(weights=weights)


@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v3"])
def test_one_aligned_step_of_each_method_changes_exactly_its_trainable_set(family, qwen, deepseek):
    """``routers`` / ``experts`` / ``experts+routers``, each one step with the alignment term: the
    chosen layers' router rows and / or the selected experts change, every other value of the model
    (other layers' routers, the selection bias, shared experts, attention ...) is bitwise the base."""
    model, params = qwen if family == "qwen3_moe" else deepseek
    cfg = model.cfg
    last = cfg.num_moe_layers - 1
    selected = [(0, 1), (last, 5)]
    align = Alignment(1.0, "js", (last,))
    methods = {
        "routers": Routers.init(params, cfg, (last,)),
        "experts": FullExperts.init(params, cfg, selected),
        "experts+routers": ExpertsRouters(
            {
                **FullExperts.init(params, cfg, selected).weights,
                ROUTERS: Routers.init(params, cfg, (last,)).weights[ROUTERS],
            },
            {
                **FullExperts.init(params, cfg, selected).slots,
                ROUTERS: Routers.init(params, cfg, (last,)).slots[ROUTERS],
            },
        ),
    }
    run, row = moe_layer_location(cfg, last)
    for name, trainable in methods.items():
        merged = _one_step(model, params, trainable, align).merge(params)
        routers, experts = name != "experts", name != "routers"
        flat = dict(jax.tree_util.tree_flatten_with_path(merged)[0])
        for path, old in jax.tree_util.tree_flatten_with_path(params)[0]:
            key, new = jax.tree_util.keystr(path), np.asarray(flat[path])
            old = np.asarray(old)
            if routers and f"'{run}']['moe']['router" in key and "selection" not in key:
                changed = [not np.array_equal(bits(a), bits(b)) for a, b in zip(old, new, strict=True)]
                assert changed == [i == row for i in range(len(old))], (name, key, changed)
            elif experts and "['experts']" in key:
                for layer in range(cfg.num_moe_layers):
                    r, i = moe_layer_location(cfg, layer)
                    if f"'{r}']" not in key:
                        continue
                    for e in range(cfg.num_experts):
                        same = np.array_equal(bits(old[i, e]), bits(new[i, e]))
                        assert same != ((layer, e) in selected), (name, key, layer, e)
            else:
                assert np.array_equal(bits(old), bits(new)), (name, key)


def test_trained_routers_round_trip_merge_into_the_hf_export_and_peft_says_why_not(tmp_path, qwen_dir, monkeypatch):
    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    trained = _one_step(model, params, Routers.init(params, model.cfg, (1,)), Alignment(1.0, "kl", (1,)))
    save_trained_experts(str(tmp_path), trained)
    back = load_trained_experts(str(tmp_path))
    assert isinstance(back, Routers)
    merged = back.merge(params)
    out = rise_jax.export_model(model, merged, str(tmp_path / "hf"), source_dir=qwen_dir, progress=False)
    hf = load_hf_model(out)
    gate = hf.model.layers[1].mlp.gate.weight.detach().numpy()  # [E, H]
    np.testing.assert_array_equal(gate.T, np.asarray(merged["layers"]["moe"]["router"][1]))
    assert not np.array_equal(gate.T, np.asarray(params["layers"]["moe"]["router"][1]))
    ids, mask = padded_batch(128, [10, 7], 10, [False, True], seed=3)
    ref, _ = hf_forward(hf, ids, mask)
    ours = np.asarray(rise_jax.forward(model, merged, jnp.asarray(ids), jnp.asarray(mask)).logits)
    assert np.abs(ours - ref)[mask.astype(bool)].max() < 1e-4
    from rise_jax.training.methods import routers as routers_module

    said = []  # absl's handlers depend on what ran before in this process (messages.setup): record the call
    monkeypatch.setattr(routers_module.logging, "info", lambda msg, *a: said.append(msg % a if a else msg))
    assert back.write_exports(model.cfg, {"peft": str(tmp_path / "peft")}, {}, qwen_dir) == []
    assert any("PEFT LoRA adapter cannot express" in m for m in said) and not (tmp_path / "peft").exists()


def test_the_routing_alignment_preset_runs_end_to_end_and_reports_the_comparison(tmp_path):
    """The sweep ``routing_alignment`` (RISE with steering, RISE + align, routers + align) through the
    sweep's entry on the tiny pipeline: every point trains what it says (the routers point only the
    middle layer's router), the divergence task scores base / trained / steered, and sweep.md ends
    with the comparison table and its two plots."""
    checkpoint = save_hf_model(make_hf_model("qwen3_moe", seed=4, vocab_size=TINY_VOCAB), str(tmp_path / "ckpt"))
    c = tiny_config(checkpoint)
    c.stages = "stats,analyze,select,train,eval"
    c.train.data.max_samples = 6
    c.train.held_out = 0.0
    c.eval.run = "perplexity,routing_divergence"
    c.eval.languages = "bn,sw"
    c.eval.max_samples = 3
    c.eval.progress = False
    c.eval.steer.source, c.eval.steer.language, c.eval.steer.tau = "language", "en", 0.05
    for task in ("perplexity", "routing_divergence"):
        c.eval.tasks[task].path, c.eval.tasks[task].split, c.eval.tasks[task].max_length = FLORES, "dev", 24
    c.eval.tasks.routing_divergence.languages = "bn"
    summary = run_sweep(c, get_sweep("routing_alignment"), str(tmp_path / "sweep"))

    trained = [json.load(open(os.path.join(p["workdir"], "train", "summary.json"))) for p in summary]
    assert [t["method"] for t in trained] == ["experts", "experts", "routers"]
    assert (
        "alignment" not in trained[0]
        and trained[1]["alignment"]["layers"] == [1] == trained[2]["router_layers"]["layers"]
    )
    rows = json.load(open(tmp_path / "sweep" / "alignment.json"))
    assert [r["name"] for r in rows] == [
        "RISE (experts)",
        "steering at inference",
        "RISE (experts) + align",
        "routers + align",
    ]
    for r in rows:
        assert (
            r["task"] == "perplexity"
            and r["others"] is not None
            and r["gain"] == pytest.approx(r["after"] - r["before"])
        )
        assert r["div_before"] == rows[0]["div_before"] > 0 and r["div_after"] > 0
    assert rows[3]["div_after"] != rows[3]["div_before"]  # a trained router moves the routing
    text = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "## Routing alignment vs RISE on bn" in text and "| routers + align |" in text
    assert all((tmp_path / "sweep" / f"alignment_{n}.png").is_file() for n in ("gain", "divergence"))


def test_the_arms_stage_finds_this_run_among_the_points_and_names_a_bad_sweep_or_task():
    from rise_jax.configs import demo
    from rise_jax.stages.arms import ArmsError, is_this_run, validate

    c = demo.get_config("test")
    assert [is_this_run(c, p) for p in get_sweep("routing_alignment")] == [True, False, False]
    c.eval.variants = "base,trained"  # the RISE point also scores steering: no longer this run
    assert not is_this_run(c, get_sweep("routing_alignment")[0])
    for field, value, message in (
        ("sweep", "", r"config.arms.sweep is empty"),
        ("sweep", "nope", r"config.arms.sweep: unknown sweep 'nope'"),
        ("eval_run", "perplexity,mgsm", r"config.arms.eval_run = 'perplexity,mgsm': \['mgsm'\] not in config.eval.run"),
    ):
        bad = demo.get_config("test")
        bad.arms[field] = value
        with pytest.raises(ArmsError, match=message):
            validate(bad)
