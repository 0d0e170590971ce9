"""RISE+LoRA (``train.method=rise_lora``): low-rank adapters inside the selected experts only, as
a weight source (:class:`~rise_jax.models.expert_weights.LoRAExperts`) — PEFT's init, exact step
0, adapter path == merged weights, isolation, the optimiser state, the compact checkpoint, resume,
the pipeline end to end (eval's ``trained`` variant, export) and clear errors."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixture_data import TINY_VOCAB
from hf_reference import make_hf_model, save_hf_model
from tiny_pipeline import tiny_config as config

import rise_jax
from rise_jax import launch
from rise_jax.models.expert_weights import LORA_A, LORA_B
from rise_jax.training import partition
from rise_jax.training.artefacts import load_trained_experts, save_trained_experts
from rise_jax.training.methods import DenseLoRA, ExpertLoRA
from rise_jax.training.methods.lora import LORA_DENSE, with_dense_adapters
from rise_jax.training.methods.rise_lora import LORA_SCALE
from rise_jax.training.options import TrainOptions
from rise_jax.training.step import make_steps

DISPATCHES = ("grouped_scan", "ragged", "blocked", "dense")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_hf_model(make_hf_model("qwen3_moe", seed=5, mlp_only_layers=[1]), str(tmp_path_factory.mktemp("q")))


def _logits(model, params, ids, trainable=None):
    mask = jnp.ones_like(ids)
    f = jax.jit(lambda p, t: model.apply({"params": p}, ids, mask, trainable_experts=t).logits)
    return f(params, trainable)


def _train(model, params, trainable, ids, steps, weight_decay=0.0, lr=1e-2):
    import optax

    tx = optax.adamw(lr, weight_decay=weight_decay)
    grad_step, apply_step, _ = make_steps(model, tx)
    mask = jnp.ones_like(ids)
    weights, opt = trainable.weights, tx.init(trainable.weights)
    for _ in range(steps):
        _, _, grads = grad_step(trainable.replace(weights=weights), params, ids, mask, mask, jax.random.PRNGKey(0))
        weights, opt, _ = apply_step(weights, opt, grads, 1)
    return trainable.replace(weights=weights), opt


def test_adapters_start_as_peft_does_so_step_zero_is_the_base_model(tiny):
    model, params = rise_jax.load_model(tiny, dtype="float32", progress=False)
    cfg = model.cfg
    trainable = ExpertLoRA.init(cfg, [(0, 1), (1, 3), (1, 7)], rank=4, alpha=8.0, seed=0)
    assert float(trainable.slots[LORA_SCALE]) == 2.0  # alpha / r
    runs = trainable.weights  # the tiny model's MoE layers sit in two runs around a dense one
    assert sum(e["gate_proj"][LORA_A].shape[0] for e in runs.values()) == 3
    for entry in runs.values():
        gate, down = entry["gate_proj"], entry["down_proj"]
        k = gate[LORA_A].shape[0]
        assert gate[LORA_A].shape == (k, 4, cfg.hidden_size) and gate[LORA_B].shape == (k, cfg.moe_intermediate_size, 4)
        assert down[LORA_A].shape == (k, 4, cfg.moe_intermediate_size) and down[LORA_B].shape == (k, cfg.hidden_size, 4)
        assert float(jnp.abs(gate[LORA_A]).max()) <= 1 / np.sqrt(cfg.hidden_size) and not jnp.any(gate[LORA_B])
    ids = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 10)))
    for dispatch in DISPATCHES:
        m, p = rise_jax.load_model(tiny, dtype="float32", progress=False, dispatch=dispatch)
        np.testing.assert_array_equal(_logits(m, p, ids, trainable), _logits(m, p, ids))
    with pytest.raises(ValueError, match="LoRA rank must be >= 1, got 0"):
        ExpertLoRA.init(cfg, [(0, 1)], rank=0, alpha=8.0)


@pytest.mark.parametrize("dispatch", ["grouped_scan", "ragged"])  # step 0 above covers all four
def test_the_adapter_path_equals_the_merged_weights_and_touches_nothing_else(tiny, dispatch):
    model, params = rise_jax.load_model(tiny, dtype="float32", progress=False, dispatch=dispatch)
    cfg = model.cfg
    ids = jnp.asarray(np.random.RandomState(1).randint(0, cfg.vocab_size, (2, 12)))
    # The experts that the token sequence `quiet` never reaches: its interference mass rho is 0.
    quiet = jnp.asarray(np.random.RandomState(2).randint(0, cfg.vocab_size, (1, 2)))
    used = np.asarray(rise_jax.forward(model, params, quiet, return_routing=True).routing.topk_indices)[:, 0]
    selected = [
        (layer, e) for layer in range(cfg.num_moe_layers) for e in range(cfg.num_experts) if e not in used[layer]
    ]
    selected = selected[:: max(1, len(selected) // 6)][:6]
    trainable, opt = _train(model, params, ExpertLoRA.init(cfg, selected, 4, 8.0, 0), ids, steps=20, weight_decay=0.1)
    # The optimiser state holds exactly the adapters.
    weights_tree = jax.tree_util.tree_structure(trainable.weights)
    adam = opt[0]
    assert jax.tree_util.tree_structure(adam.mu) == weights_tree == jax.tree_util.tree_structure(adam.nu)
    merged = trainable.merge(params)
    adapter_logits, base_logits = _logits(model, params, ids, trainable), _logits(model, params, ids)
    np.testing.assert_allclose(_logits(model, merged, ids), adapter_logits, rtol=0, atol=1e-5)
    assert float(jnp.abs(adapter_logits - base_logits).max()) > 1e-3  # it learned something
    # Unselected experts and every other tensor: bitwise the base.
    flat_base = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    expected = {
        run: set(zip(*np.nonzero(s >= 0), strict=True)) for run, s in partition.expert_slots(cfg, selected).items()
    }
    seen = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(merged)[0]:
        keys = [str(getattr(k, "key", k)) for k in path]
        if keys[-2:-1] == ["experts"] and keys[-1] in ("gate_proj", "up_proj", "down_proj"):
            diff = np.any(np.asarray(leaf) != np.asarray(flat_base[path]), axis=(-2, -1))  # [n, E]
            changed = set(zip(*np.nonzero(diff), strict=True))
            assert changed == expected.get(keys[0], set()), (keys, changed, expected)
            seen += len(changed)
        else:
            np.testing.assert_array_equal(leaf, flat_base[path])
    assert seen == 3 * len(selected) and len(selected) >= 4
    # rho = 0: an input that never reaches a selected expert keeps its logits bit for bit.
    np.testing.assert_array_equal(_logits(model, params, quiet, trainable), _logits(model, params, quiet))


def test_the_compact_checkpoint_round_trips_with_its_scale(tiny, tmp_path):
    model, params = rise_jax.load_model(tiny, dtype="float32", progress=False)
    ids = jnp.asarray(np.random.RandomState(1).randint(0, model.cfg.vocab_size, (2, 12)))
    trainable, _ = _train(model, params, ExpertLoRA.init(model.cfg, [(0, 2), (1, 5)], 16, 4.0, 3), ids, steps=3)
    save_trained_experts(str(tmp_path), trainable)
    back = load_trained_experts(str(tmp_path))
    assert float(back.slots[LORA_SCALE]) == 0.25  # a fractional alpha / r survives
    for a, b in zip(jax.tree_util.tree_leaves(trainable.weights), jax.tree_util.tree_leaves(back.weights), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        _logits(model, back.merge(params), ids),
        _logits(model, trainable.merge(params), ids),
    )


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    ckpt = save_hf_model(
        make_hf_model("qwen3_moe", seed=9, vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=4),
        str(tmp_path_factory.mktemp("ck")),
    )
    wd = str(tmp_path_factory.mktemp("wd"))
    c = config(ckpt)
    c.train.method = "rise_lora"
    c.train.lora_rank = 2
    c.train.lora_alpha = 4.0
    c.stages = "stats,select,train,export,eval"
    c.eval.run = "perplexity"
    c.eval.variants = "base,trained"
    c.eval.max_samples = 3
    c.eval.progress = False
    c.eval.tasks.perplexity.path = c.data.path
    c.eval.tasks.perplexity.max_length = 24
    c.eval.languages = "bn"
    launch.run(c, wd)
    return ckpt, wd, c


def test_rise_lora_runs_stats_to_eval_and_exports_the_merged_experts(lora_run):
    ckpt, wd, c = lora_run
    summary = json.load(open(os.path.join(wd, "train", "summary.json")))
    assert summary["status"] == "completed" and summary["method"] == "rise_lora"
    from rise_jax.stages.report import _training_section

    assert summary["lora"] == {"rank": 2, "alpha": 4.0}
    assert "Method: RISE+LoRA — low-rank adapters inside the selected experts (`rise_lora`), rank 2, alpha 4." in (
        "".join(_training_section(summary))
    )
    assert summary["trainable_parameters"] == 4 * 3 * 2 * (32 + 16)  # K x 3 projections x r x (in + out)
    res = json.load(open(os.path.join(wd, "eval", "results.json")))["results"]
    assert res["trained"]["perplexity"]["bn"]["perplexity"] != res["base"]["perplexity"]["bn"]["perplexity"]
    _, exported = rise_jax.load_model(os.path.join(wd, "export", "hf"), dtype="float32", progress=False)
    model, base = rise_jax.load_model(ckpt, dtype="float32", progress=False)
    want = load_trained_experts(os.path.join(wd, "train")).merge(base)
    for a, b in zip(jax.tree_util.tree_leaves(exported), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_interrupted_rise_lora_run_resumes_to_the_uninterrupted_adapters(lora_run, tmp_path):
    from rise_jax.pipeline import PipelineError

    _, wd, c = lora_run
    wd2 = str(tmp_path / "resumed")
    shutil.copytree(wd, wd2)
    shutil.rmtree(os.path.join(wd2, "train"))
    c.stages = "train"
    c.train.max_steps = 1
    with pytest.raises(PipelineError, match="stopped at max_steps"):
        launch.run(c, wd2)
    c.train.max_steps = 0
    launch.run(c, wd2)
    a, b = load_trained_experts(os.path.join(wd, "train")), load_trained_experts(os.path.join(wd2, "train"))
    for x, y in zip(jax.tree_util.tree_leaves(a.weights), jax.tree_util.tree_leaves(b.weights), strict=True):
        np.testing.assert_array_equal(x, y)


def test_rise_lora_settings_are_checked(lora_run, tmp_path):
    from rise_jax.errors import SettingError
    from rise_jax.selection.algorithms import SelectionError

    ckpt, _, _ = lora_run
    c = config(ckpt)
    c.stages = "train"
    c.train.method = "rise_lora"
    c.train.lora_rank = 0
    with pytest.raises(SettingError, match=r"config.train.lora_rank = 0: must be >= 1"):
        launch.run(c, str(tmp_path / "a"))
    c.train.lora_rank = 4
    c.train.extra_trainable = "moe/shared_expert"
    with pytest.raises(SettingError, match="not with train.method=rise_lora"):
        launch.run(c, str(tmp_path / "b"))
    c.train.extra_trainable = ""
    c.train.lora_dropout = 1.0
    with pytest.raises(SettingError, match=r"config.train.lora_dropout = 1.0: must be in \[0, 1\)"):
        launch.run(c, str(tmp_path / "e"))
    c.train.lora_dropout = 0.05  # PEFT refuses dropout on fused expert weights; so do we
    with pytest.raises(SettingError, match="adapters inside experts train through the merged weights"):
        launch.run(c, str(tmp_path / "f"))
    c.train.lora_dropout = 0.0
    c.train.method = "lora_everywhere"
    with pytest.raises(
        SettingError, match=r"config.train.method = 'lora_everywhere'; choose one of experts, rise_lora"
    ):
        launch.run(c, str(tmp_path / "c"))
    c.train.method = "rise_lora"
    with pytest.raises(SelectionError, match=r"selection.json: missing \(run the select stage first\)"):
        launch.run(c, str(tmp_path / "d"))


# --- the LoRA baseline: adapters on dense kernels (train.method=lora) -------------------------------


def _peft_key(key):
    return key.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")


def _peft_pair(tiny, dropout=0.0, random_b=False):
    """Our model with dense LoRA adapters on q/k/v/o and HF + peft with the same init (with
    ``random_b`` B is drawn too, so gradients reach A and the adapters act from the start)."""
    import peft
    import torch
    from hf_reference import load_hf_model

    from rise_jax.checkpoints.peft_export import peft_tensors

    model, params = rise_jax.load_model(tiny, dtype="float32", progress=False)
    trainable = DenseLoRA.init(params, [TrainOptions.lora_targets], 4, 8.0, seed=1, dropout=dropout)
    if random_b:
        leaves, tree = jax.tree_util.tree_flatten_with_path(trainable.weights)
        draw = np.random.RandomState(2)
        leaves = [
            jnp.asarray(draw.normal(0, 0.05, x.shape), jnp.float32) if str(path[-1]) == f"['{LORA_B}']" else x
            for path, x in leaves
        ]
        trainable = trainable.replace(weights=jax.tree_util.tree_unflatten(tree, leaves))
    ours0, targets = peft_tensors(trainable.weights[LORA_DENSE], model.cfg)
    assert targets == ["k_proj", "o_proj", "q_proj", "v_proj"]
    hf = peft.get_peft_model(
        load_hf_model(tiny), peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=targets)
    )
    state = hf.state_dict()
    assert {_peft_key(k) for k in ours0} == {k for k in state if "lora_" in k}
    with torch.no_grad():  # the same init on both sides (B = 0 in both already)
        for key, value in ours0.items():
            state[_peft_key(key)].copy_(torch.from_numpy(np.array(value)))
    return model, params, trainable, hf


def test_dense_lora_steps_as_hf_peft_does_and_exports_what_peft_and_transformers_load(tiny, tmp_path):
    import optax
    import peft
    import torch
    from hf_reference import load_hf_model

    from rise_jax.checkpoints.peft_export import export_peft_adapter, peft_tensors

    model, params, trainable, hf = _peft_pair(tiny)
    cfg = model.cfg
    ids = np.random.RandomState(3).randint(0, cfg.vocab_size, (2, 10))
    # HF + peft: one AdamW step on the causal-LM loss.
    opt = torch.optim.AdamW([p for p in hf.parameters() if p.requires_grad], lr=1e-3, eps=1e-8, weight_decay=0.0)
    loss = hf(input_ids=torch.tensor(ids), labels=torch.tensor(ids)).loss
    loss.backward()
    opt.step()
    # Ours: the same step.
    tx = optax.adamw(1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
    grad_step, apply_step, _ = make_steps(model, tx)
    j = jnp.asarray(ids)
    mask = jnp.ones_like(j)
    our_loss, _, grads = grad_step(trainable, params, j, mask, mask, jax.random.PRNGKey(0))
    weights, _, _ = apply_step(trainable.weights, tx.init(trainable.weights), grads, 1)
    assert float(our_loss) == pytest.approx(float(loss), abs=1e-5)
    stepped = trainable.replace(weights=weights)
    ours1, _ = peft_tensors(weights[LORA_DENSE], cfg)
    state = hf.state_dict()
    for key, value in ours1.items():
        np.testing.assert_allclose(value, state[_peft_key(key)].detach().numpy(), rtol=0, atol=1e-5, err_msg=key)
    assert any(np.abs(v).max() > 0 for k, v in ours1.items() if "lora_B" in k)  # B moved
    # Ours (merged: W + scale (B A)^T; and the step's path, x W + scale B A x, unmerged as in peft),
    # the PEFT adapter loaded by peft and the merged export loaded by transformers.
    merged = stepped.merge(params)
    ours = np.asarray(_logits(model, merged, j))
    scale = trainable.slots[LORA_SCALE]
    unmerged = _logits(model, with_dense_adapters(params, weights[LORA_DENSE], scale), j)
    np.testing.assert_array_equal(np.asarray(unmerged), np.asarray(_logits(model, stepped.model_params(params), j)))
    np.testing.assert_allclose(np.asarray(unmerged), ours, rtol=0, atol=1e-5)
    assert float(np.abs(ours - np.asarray(_logits(model, params, j))).max()) > 1e-4  # the adapters act
    adapter_dir = export_peft_adapter(weights[LORA_DENSE], cfg, str(tmp_path / "peft"), 4, 8.0, tiny)
    loaded = peft.PeftModel.from_pretrained(load_hf_model(tiny), adapter_dir).eval()
    with torch.no_grad():
        np.testing.assert_allclose(loaded(input_ids=torch.tensor(ids)).logits.numpy(), ours, rtol=0, atol=1e-5)
    merged_dir = rise_jax.export_model(
        model, stepped.merge(params), str(tmp_path / "hf"), source_dir=tiny, progress=False
    )
    with torch.no_grad():
        np.testing.assert_allclose(
            load_hf_model(merged_dir)(input_ids=torch.tensor(ids)).logits.numpy(), ours, rtol=0, atol=1e-5
        )


def test_dense_lora_dropout_drops_the_adapter_input_as_peft_does_given_the_same_masks(tiny):
    """lora_dropout > 0: our training step's loss and adapter gradients equal HF + peft's when
    peft's dropout modules apply the masks our step drew (captured from the same forward pass);
    evaluation (no dropout rng) is deterministic and equals the dropout-free model."""
    import flax.linen as nn
    import torch

    from rise_jax.checkpoints.peft_export import peft_tensors
    from rise_jax.models.layout import layer_runs
    from rise_jax.training.step import step_rngs

    p = 0.4
    model, params, trainable, hf = _peft_pair(tiny, dropout=p, random_b=True)
    cfg, scale = model.cfg, trainable.slots[LORA_SCALE]
    ids = np.random.RandomState(4).randint(0, cfg.vocab_size, (2, 9))
    j = jnp.asarray(ids)
    mask, rng = jnp.ones_like(j), jax.random.PRNGKey(7)
    grad_step, _, eval_step = make_steps(model, __import__("optax").sgd(0.0))
    loss, count, grads = grad_step(trainable, params, j, mask, mask, rng)
    adapted = with_dense_adapters(params, trainable.weights[LORA_DENSE], scale)
    _, state = model.apply(
        {"params": adapted},
        j,
        mask,
        trainable_experts=trainable,  # its adapter dropout
        rngs=step_rngs(rng),
        capture_intermediates=lambda m, _: isinstance(m, nn.Dropout),
        mutable=["intermediates"],
    )
    dropped = state["intermediates"]
    kept = []
    for run in layer_runs(cfg):
        if run.name not in dropped:  # a run without adapters (none here: every layer has attention)
            continue
        for proj, sub in dropped[run.name]["attn"].items():
            x = np.asarray(sub["lora_dropout"]["__call__"][0])  # [n, B, T, in]: x * keep / (1 - p)
            for i in range(run.length):
                layer = hf.base_model.model.model.layers[run.start + i].self_attn
                keep = torch.from_numpy((x[i] != 0).astype(np.float32))
                kept.append(float(keep.mean()))
                getattr(layer, proj).lora_dropout["default"] = _FixedDropout(keep, p)
    assert len(kept) == 4 * cfg.num_layers and 0.45 < np.mean(kept) < 0.75  # about 1 - p kept
    out = hf(input_ids=torch.tensor(ids), labels=torch.tensor(ids))
    out.loss.backward()
    assert float(loss) == pytest.approx(float(out.loss), abs=1e-5)
    ours, _ = peft_tensors(grads[LORA_DENSE], cfg)
    named = dict(hf.named_parameters())
    for key, g in ours.items():
        theirs = named[_peft_key(key)].grad.numpy()
        np.testing.assert_allclose(g, theirs, rtol=0, atol=1e-5 * max(1.0, np.abs(theirs).max()), err_msg=key)
    # Without the masks (dropout off) the step differs: the dropout acted.
    hf.eval()
    for layer in hf.base_model.model.model.layers:
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            getattr(layer.self_attn, proj).lora_dropout["default"] = torch.nn.Identity()
    with torch.no_grad():
        plain = hf(input_ids=torch.tensor(ids), labels=torch.tensor(ids)).loss
    assert abs(float(plain) - float(loss)) > 1e-4
    # Evaluation draws no dropout: equal to the adapters without it, and to peft in eval mode.
    total, n = eval_step(trainable, params, j, mask, mask)
    free_total, _ = eval_step(trainable.replace(dropout=0.0), params, j, mask, mask)
    assert float(total) == float(free_total)
    assert float(total / n) == pytest.approx(float(plain), abs=1e-5)


def _FixedDropout(keep, p):  # noqa: N802 (a torch module class, made on demand)
    """A stand-in for peft's ``lora_dropout`` module: multiplies by a given keep-mask / (1 - p)."""
    import torch

    class FixedDropout(torch.nn.Module):
        def forward(self, x):
            return x * keep / (1 - p)

    return FixedDropout()


def test_the_lora_baseline_runs_through_the_pipeline_and_exports_a_peft_adapter(lora_run, tmp_path):
    import peft
    from hf_reference import load_hf_model

    from rise_jax.errors import SettingError

    ckpt, _, _ = lora_run
    c = config(ckpt)
    c.train.method = "lora"
    c.train.lora_rank = 2
    c.train.lora_dropout = 0.1  # trains with dropped adapter inputs; the adapter config says so
    c.stages = "stats,select,train,export"
    wd = str(tmp_path / "wd")
    launch.run(c, wd)
    summary = json.load(open(os.path.join(wd, "train", "summary.json")))
    assert summary["method"] == "lora" and summary["status"] == "completed"
    lora = {"rank": 2, "alpha": 8.0, "targets": r"attn/(q|k|v|o)_proj/kernel$", "dropout": 0.1, "all_experts": False}
    assert summary["lora"] == lora
    from rise_jax.stages.report import _training_section

    assert r"rank 2, alpha 8, targets `attn/(q|k|v|o)_proj/kernel$`, dropout 0.1." in "".join(
        _training_section(summary)
    )
    assert summary["trainable_parameters"] == 4 * 2 * (
        2 * (32 + 32) + 2 * (32 + 16)
    )  # 4 layers: q, o 32->32; k, v 32->16
    conf = json.load(open(os.path.join(wd, "export", "peft", "adapter_config.json")))
    assert conf["r"] == 2 and conf["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert conf["lora_dropout"] == 0.1
    peft.PeftModel.from_pretrained(load_hf_model(ckpt), os.path.join(wd, "export", "peft"))
    # Optionally adapters inside every expert too: the merged export changes every expert.
    c.train.lora_all_experts = True
    with pytest.raises(SettingError, match=r"config.train.lora_dropout = 0.1: adapters inside experts"):
        launch.run(c, wd)
    c.train.lora_dropout = 0.0
    launch.run(c, wd)
    summary = json.load(open(os.path.join(wd, "train", "summary.json")))
    dense = 4 * 2 * (2 * (32 + 32) + 2 * (32 + 16))
    assert summary["trainable_parameters"] == dense + 4 * 8 * 3 * 2 * (
        32 + 16
    )  # + 4 layers x 8 experts x 3 projections
    _, exported = rise_jax.load_model(os.path.join(wd, "export", "hf"), dtype="float32", progress=False)
    _, base = rise_jax.load_model(ckpt, dtype="float32", progress=False)
    up, up0 = (np.asarray(p["layers"]["moe"]["experts"]["up_proj"]) for p in (exported, base))
    assert np.all(np.any(up != up0, axis=(-2, -1)))  # every (layer, expert) moved
    c.train.lora_targets = "attn/nothing_here"
    with pytest.raises(ValueError, match=r"LoRA target pattern\(s\) \['attn/nothing_here'\] match no parameter"):
        launch.run(c, wd)
