"""DeepSeek-style families (deepseek_v2, deepseek_v3, glm4_moe) beyond forward parity
(test_model_parity.py): the HF -> ours -> HF round trip, KV-cache decoding against full forwards
and HF ``generate``, one training step against torch, the whole pipeline through the CLI, and
ESFT's expert-config JSON. One tiny checkpoint per family is built once for the module."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from fixture_data import TEST_DATA, TINY_VOCAB
from hf_reference import hf_forward, load_hf_model, make_hf_model, padded_batch, safetensors_bits, save_hf_model, yarn

import rise_jax
from rise_jax.evaluation.generate import generate
from rise_jax.models.layout import layer_runs
from rise_jax.models.transformer import init_kv_cache

FAMILIES = ("deepseek_v2", "deepseek_v3", "glm4_moe")
# Every routing and attention variant at once: q_lora_rank, YaRN with mscale, groups, bias,
# a dense first layer; TINY_VOCAB so the pipeline's tokenizer fits.
OVERRIDES = {
    "deepseek_v2": dict(
        q_lora_rank=10,
        topk_method="group_limited_greedy",
        n_group=2,
        topk_group=1,
        num_experts_per_tok=3,
        routed_scaling_factor=1.5,
        rope_parameters=yarn(4.0, 8, 0.707, 0.707),
    ),
    "deepseek_v3": dict(rope_parameters=yarn(8.0, 16, 1.0, 0.8)),
    "glm4_moe": dict(use_qk_norm=True, n_group=2, topk_group=1),
}


@pytest.fixture(scope="module", params=FAMILIES)
def ckpt(request, tmp_path_factory):
    family = request.param
    hf = make_hf_model(family, seed=21, vocab_size=TINY_VOCAB, num_hidden_layers=4, **OVERRIDES[family])
    with torch.no_grad():  # a -0.0 the round trip must keep
        next(p for n, p in hf.named_parameters() if "o_proj" in n).view(-1)[0] = -0.0
    return family, save_hf_model(hf, str(tmp_path_factory.mktemp(family) / "ckpt"))


def test_hf_to_ours_to_hf_is_bit_identical(ckpt, tmp_path):
    family, src = ckpt
    model, params = rise_jax.load_model(src, dtype="float32", progress=False)
    assert model.cfg.model_type == family
    out = rise_jax.export_model(model, params, str(tmp_path / "out"), source_dir=src, progress=False)
    a, b = safetensors_bits(src), safetensors_bits(out)
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k  # int32 bit patterns of the fp32 tensors (-0.0 included)
    # The config written from our ModelConfig alone also loads in transformers with equal logits.
    gen = rise_jax.export_model(model, params, str(tmp_path / "gen"), progress=False)
    ids, mask = padded_batch(TINY_VOCAB, [9, 6], 9, [False, True], seed=1)
    np.testing.assert_array_equal(
        hf_forward(load_hf_model(gen), ids, mask)[0], hf_forward(load_hf_model(src), ids, mask)[0]
    )


def test_glm4_moe_lite_round_trip_and_generated_config_load_in_transformers(tmp_path):
    """glm4_moe_lite: DeepSeek-V3 blocks, dense/MoE layers from mlp_layer_types (parity: test_model_parity)."""
    src = save_hf_model(make_hf_model("glm4_moe_lite", seed=22, q_lora_rank=10), str(tmp_path / "src"))
    model, params = rise_jax.load_model(src, dtype="float32", progress=False)
    assert model.cfg.moe_layer_ids == (1, 3)
    out = rise_jax.export_model(model, params, str(tmp_path / "out"), source_dir=src, progress=False)
    a, b = safetensors_bits(src), safetensors_bits(out)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    gen = rise_jax.export_model(model, params, str(tmp_path / "gen"), progress=False)
    ids, mask = padded_batch(128, [9, 6], 9, [False, True], seed=1)
    np.testing.assert_array_equal(
        hf_forward(load_hf_model(gen), ids, mask)[0], hf_forward(load_hf_model(src), ids, mask)[0]
    )


def test_kv_cache_decoding_equals_full_forward_and_hf_generate(ckpt):
    """The MLA cache holds the compressed latent and the rotated key per token (layers.MLAttention)."""
    family, path = ckpt
    model, params = rise_jax.load_model(path, dtype="float32", dispatch="dense", progress=False)
    cfg = model.cfg
    cache = init_kv_cache(cfg, 3, 20, jnp.float32)
    if cfg.attention == "mla":
        assert {a.shape[-2:] for a in cache.keys.values()} == {(1, cfg.kv_lora_rank)}
        assert {a.shape[-2:] for a in cache.values.values()} == {(1, cfg.head_dim)}
    if family == "deepseek_v2":  # MLA's cache step by step (deepseek_v3 runs the same attention)
        _cache_steps_equal_full_forward(model, params, cache)
    ids, mask = (a.astype(np.int32) for a in padded_batch(TINY_VOCAB, [11, 4, 8], 11, [True] * 3, seed=4))
    ours = generate(model, params, ids, mask, max_new_tokens=8, stop_ids=[], pad_id=0)
    with torch.no_grad():
        hf = load_hf_model(path).generate(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
    assert ours == hf[:, ids.shape[1] :].tolist()


def _cache_steps_equal_full_forward(model, params, cache):
    """Prefill 16 left-padded positions, then 4 single-token steps: logits as one full forward."""
    ids, mask = padded_batch(TINY_VOCAB, [9, 5, 12], 16, [True] * 3, seed=1)
    full_ids = np.concatenate([ids, np.random.RandomState(2).randint(1, TINY_VOCAB, (3, 4))], 1).astype(np.int32)
    full_mask = np.concatenate([mask, np.ones((3, 4), np.int64)], 1).astype(np.int32)
    pos = np.where(full_mask > 0, np.cumsum(full_mask, 1) - 1, 1).astype(np.int32)
    ref = np.asarray(rise_jax.forward(model, params, full_ids, full_mask, pos).logits)
    apply = jax.jit(lambda p, i, q, c: model.apply({"params": p}, i, jnp.asarray(full_mask), q, kv_cache=c))
    out = apply(params, full_ids[:, :16], pos[:, :16], cache)
    got = [np.asarray(out.logits)]
    for step in range(16, 20):
        out = apply(params, full_ids[:, step : step + 1], pos[:, step : step + 1], out.kv_cache)
        got.append(np.asarray(out.logits))
    assert np.abs(np.concatenate(got, 1) - ref)[full_mask.astype(bool)].max() < 1e-4


SELECTED = [(0, 1), (0, 4), (2, 3), (2, 6)]  # (MoE layer, expert)
# A whole pipeline per family, each training with another method: deepseek_v2 (MLA, the
# group-limited softmax router; ESFT's model: it trains the experts an ESFT expert-config JSON lists,
# select.method=esft_json, and, as its shared_experts flag says, the shared experts), deepseek_v3
# (MLA with the sigmoid router, its selection bias and groups; dense LoRA, whose adapters reach
# MLA's projections) and glm4_moe (the same router with standard attention; RISE+LoRA).
TRAIN_METHOD = {"deepseek_v2": "experts", "deepseek_v3": "lora", "glm4_moe": "rise_lora"}
ESFT_RELEASED = {"experts": {"1": [0, 3], "2": [], "3": [5, 6]}, "shared_experts": True, "non_expert_modules": False}


def test_one_training_step_matches_torch_with_only_the_selected_experts_trainable(ckpt):
    """Per family (deepseek_v2: group-limited softmax router, MLA with q_lora_rank, YaRN;
    deepseek_v3 / glm4_moe: sigmoid router with bias and groups; all with a shared expert and a
    dense first layer): loss, gradients of the selected experts and the AdamW step against torch."""
    family, path = ckpt
    from rise_jax.models.layout import moe_layer_location
    from rise_jax.training.methods import FullExperts
    from rise_jax.training.step import make_optimizer, make_steps

    hf = load_hf_model(path)
    model, params = rise_jax.load_model(path, dtype="float32", dispatch="grouped_scan", progress=False)
    cfg = model.cfg
    ids, mask = padded_batch(TINY_VOCAB, [14, 9, 11], 14, [False, False, False], seed=5)
    lr, wd, inter = 1e-2, 0.05, cfg.moe_intermediate_size
    for p in hf.parameters():
        p.requires_grad_(False)
    experts = {lyr: hf.model.layers[cfg.moe_layer_ids[lyr]].mlp.experts for lyr, _ in SELECTED}
    trainable = []
    for ex in experts.values():
        for p in (ex.gate_up_proj, ex.down_proj):
            p.requires_grad_(True)
            trainable.append(p)
    out = hf(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        labels=torch.tensor(np.where(mask == 1, ids, -100)),
    )
    out.loss.backward()
    for lyr, ex in experts.items():
        keep = torch.zeros(cfg.num_experts, dtype=torch.bool)
        keep[[e for m, e in SELECTED if m == lyr]] = True
        for p in (ex.gate_up_proj, ex.down_proj):
            p.grad[~keep] = 0.0

    def leaves(lyr, e, read):
        gu, dn = read(experts[lyr].gate_up_proj)[e].numpy(), read(experts[lyr].down_proj)[e].numpy()
        return {"gate_proj": gu[:inter].T, "up_proj": gu[inter:].T, "down_proj": dn.T}

    hf_grads = {key: leaves(*key, lambda p: p.grad.clone()) for key in SELECTED}
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    opt = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    opt.step()

    tx, _ = make_optimizer(lr, total_steps=1_000_000, warmup_ratio=0.0, weight_decay=wd, clip_norm=1.0)
    grad_step, apply_step, _ = make_steps(model, tx)
    initial = FullExperts.init(params, cfg, SELECTED)
    loss, _, grads = grad_step(initial, params, ids, mask, mask, jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(loss), out.loss.item(), rtol=1e-6)
    rows = {}
    for lyr, e in SELECTED:
        run, li = moe_layer_location(cfg, lyr)
        rows[lyr, e] = (run, li, int(np.asarray(initial.slots[run])[li, e]))
        for name, g in hf_grads[lyr, e].items():
            ours = np.asarray(grads[run][name][rows[lyr, e][2]])
            assert np.abs(ours - g).max() <= 1e-5 * np.abs(g).max(), (lyr, e, name)
    weights, _, _ = apply_step(initial.weights, tx.init(initial.weights), grads, jnp.float32(1.0))
    merged = initial.replace(weights=weights).merge(params)
    for (lyr, e), (run, li, _) in rows.items():
        want = leaves(lyr, e, lambda p: p.detach())
        for name, g in hf_grads[lyr, e].items():
            got = np.asarray(merged[run]["moe"]["experts"][name][li, e])
            steady = np.abs(g) >= 1e-6  # AdamW's first step: fp32 round-off decides it where |g| ~ eps
            assert steady.mean() > 0.5 and np.abs(got - want[name])[steady].max() < 1e-5, (lyr, e, name)
    # Everything but the routed experts is bitwise what was loaded: shared experts, router, its bias.
    for run, sub in params.items():
        for (key, a), b in zip(
            jax.tree_util.tree_leaves_with_path(sub), jax.tree_util.tree_leaves(merged[run]), strict=True
        ):
            if "['moe']['experts']" in jax.tree_util.keystr(key):
                continue
            assert np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32)), (run, key)


@pytest.mark.parametrize("ckpt", sorted(TRAIN_METHOD), indirect=True)
def test_the_whole_pipeline_runs_through_the_cli_and_its_export_loads_in_transformers(ckpt, tmp_path):
    from tiny_pipeline import family_pipeline_config

    from rise_jax import launch
    from rise_jax.selection import esft_config

    family, path = ckpt
    c = family_pipeline_config(path)
    c.train.method = TRAIN_METHOD[family]
    if family == "deepseek_v2":
        (tmp_path / "esft.json").write_text(json.dumps(ESFT_RELEASED))
        c.select.method, c.select.esft_config = "esft_json", str(tmp_path / "esft.json")
        c.train.extra_trainable = esft_config.ExpertConfig((), shared_experts=True).extra_trainable()
    wd = str(tmp_path / "wd")
    launch.run(c, wd)
    summary = json.load(open(os.path.join(wd, "routing_stats", "summary.json")))
    assert summary["model"]["model_type"] == family
    assert json.load(open(os.path.join(wd, "train", "summary.json")))["status"] == "completed"
    results = json.dumps(json.load(open(os.path.join(wd, "eval", "results.json"))))
    assert "trained" in results and "pruned" in results
    exported = os.path.join(wd, "export", "hf")
    model, params = rise_jax.load_model(exported, dtype="float32", progress=False)
    ids, mask = padded_batch(TINY_VOCAB, [10, 7], 10, [False, True], seed=1)
    ref, _ = hf_forward(load_hf_model(exported), ids, mask)
    ours = np.asarray(rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask)).logits)
    assert np.abs(ours - ref)[mask.astype(bool)].max() < 1e-4
    # Training moved only selected experts (rise_lora merges into them too); the router and its
    # selection bias did not move, the shared experts only where ESFT's flag trains them.
    _, base = rise_jax.load_model(path, dtype="float32", progress=False)
    sel = {(s["layer"], s["expert"]) for s in json.load(open(os.path.join(wd, "selection.json")))["experts"]}
    if family == "deepseek_v2":
        assert sel == {(0, 0), (0, 3), (2, 5), (2, 6)}  # decoder layers 1 and 3 = MoE layers 0 and 2
    moved = set()
    for run in layer_runs(model.cfg):
        if not run.is_moe:
            continue
        ours, orig = params[run.name]["moe"], base[run.name]["moe"]
        for key in ("shared_expert", "router", "router_selection_bias"):
            for a, b in zip(
                jax.tree_util.tree_leaves(ours.get(key)), jax.tree_util.tree_leaves(orig.get(key)), strict=True
            ):
                same = np.array_equal(np.asarray(a), np.asarray(b))
                assert same != (key == "shared_expert" and family == "deepseek_v2"), (run.name, key)
        diff = np.asarray(ours["experts"]["gate_proj"]) != np.asarray(orig["experts"]["gate_proj"])
        moved |= {(run.moe_start + int(li), int(e)) for li, e in zip(*np.nonzero(diff.any(axis=(2, 3))), strict=True)}
    if TRAIN_METHOD[family] == "lora":  # dense adapters merged into attention; no expert moves
        assert not moved
        attn = [r.name for r in layer_runs(model.cfg)]
        assert any(
            not np.array_equal(
                np.asarray(params[r]["attn"]["o_proj"]["kernel"]), np.asarray(base[r]["attn"]["o_proj"]["kernel"])
            )
            for r in attn
        )
    else:
        assert moved and moved <= sel


@pytest.mark.parametrize("ckpt", ["deepseek_v2"], indirect=True)  # the layer layout only; ESFT's own model
def test_esft_expert_config_json_round_trips_and_names_what_does_not_fit(ckpt, tmp_path):
    """ESFT's own format (decoder-layer keys, a key per MoE layer), built here as ESFT writes it."""
    from rise_jax.selection import esft_config as esft
    from rise_jax.training.partition import select_extra

    family, path = ckpt
    model, params = rise_jax.load_model(path, dtype="float32", progress=False)
    cfg = model.cfg
    assert cfg.moe_layer_ids == (1, 2, 3)  # layer 0 dense, as DeepSeek-V2-Lite
    released = {"experts": {"1": [6, 0, 3], "2": [], "3": [5]}, "shared_experts": True, "non_expert_modules": False}
    src = tmp_path / "intent.json"
    src.write_text(json.dumps(released))
    read = esft.read_expert_config(str(src), cfg)
    assert read.experts == ((0, 0), (0, 3), (0, 6), (2, 5)) and read.shared_experts and not read.non_expert_modules
    out = esft.write_expert_config(str(tmp_path / "ours.json"), cfg, read)
    written = json.load(open(out))
    assert written == {**released, "experts": {"1": [0, 3, 6], "2": [], "3": [5]}}
    assert esft.read_expert_config(out, cfg) == read
    sel = {"experts": [{"layer": m, "expert": e} for m, e in read.experts]}
    assert esft.from_selection(sel, shared_experts=True) == read
    (tmp_path / "selection.json").write_text(json.dumps(sel))
    cli = str(tmp_path / "cli.json")
    esft.main([str(tmp_path / "selection.json"), path, cli, "--shared-experts"])  # ours -> ESFT's trainer
    assert json.load(open(cli)) == written
    # The flags as train.extra_trainable rules: shared experts; everything but the experts.
    shared = select_extra(params, read.extra_trainable().split(","))
    assert {run for run in shared} == {"layers_1"} and set(shared["layers_1"]["moe"]) == {"shared_expert"}
    rest = select_extra(params, [esft.NON_EXPERT_RULE])
    assert "experts" not in rest["layers_1"]["moe"] and "shared_expert" not in rest["layers_1"]["moe"]
    assert {"router", "attn", "embed_tokens", "lm_head", "layers_0"} <= set(rest) | set(rest["layers_1"]["moe"]) | set(
        rest["layers_1"]
    )
    # Without the model config (select.method=esft_json): the keys in order are the MoE layers.
    assert esft.read_by_layer_order(out, cfg.num_moe_layers, cfg.num_experts) == read
    with pytest.raises(esft.ExpertConfigError, match=r"lists 3 layers \(1..3\), the model has 4 MoE layers"):
        esft.read_by_layer_order(out, 4, cfg.num_experts)
    for bad, message in [
        ({**released, "experts": {**released["experts"], "0": [1]}}, r"experts key '0' is not an MoE decoder layer"),
        ({**released, "experts": {"1": [1], "2": []}}, r"no key for MoE layer\(s\) 3"),
        ({**released, "experts": {**released["experts"], "2": [8]}}, r"expert 8\) is outside"),
        ({**released, "shared_experts": "yes"}, r"shared_experts = 'yes' must be true or false"),
    ]:
        src.write_text(json.dumps(bad))
        with pytest.raises(esft.ExpertConfigError, match=message):
            esft.read_expert_config(str(src), cfg)


# config.json of the hub checkpoints as published (4.x spellings; DeepSeek's remote-code keys):
# tests/data/hub_configs (bench/common.py reads the same files).
def _hub_config(name: str) -> dict:
    with open(os.path.join(TEST_DATA, "hub_configs", f"{name}.json"), encoding="utf-8") as fh:
        return json.load(fh)


DEEPSEEK_V2_LITE_HUB = _hub_config("deepseek_v2_lite")
GLM45_AIR_HUB = _hub_config("glm45_air")


@pytest.mark.parametrize("hub", [DEEPSEEK_V2_LITE_HUB, GLM45_AIR_HUB], ids=["deepseek_v2_lite", "glm45_air"])
def test_hub_configs_parse_as_transformers_reads_them(hub):
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.deepseek_v2.modeling_deepseek_v2 import yarn_apply_mscale

    from rise_jax.models.families import config_from_hf_dict
    from rise_jax.models.layers import attention_scale, rope_attention_factor, rope_inv_freq

    cfg = config_from_hf_dict(hub, source="hub.json")
    ref = transformers.AutoConfig.for_model(**hub)
    assert (cfg.num_layers, cfg.num_experts, cfg.top_k) == (
        ref.num_hidden_layers,
        ref.n_routed_experts,
        ref.num_experts_per_tok,
    )
    assert cfg.moe_layer_ids == tuple(range(ref.first_k_dense_replace, ref.num_hidden_layers))
    assert cfg.shared_expert_size == ref.n_shared_experts * ref.moe_intermediate_size
    rope_type = ref.rope_parameters["rope_type"]
    if rope_type == "default":
        dim = int(cfg.head_dim * ref.rope_parameters.get("partial_rotary_factor", 1.0))
        theta = ref.rope_parameters["rope_theta"]
        inv, scale = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)), 1.0
    else:
        inv, scale = ROPE_INIT_FUNCTIONS[rope_type](ref)
    np.testing.assert_allclose(np.asarray(rope_inv_freq(cfg.rope, cfg.head_dim)), inv.numpy(), rtol=1e-6)
    assert rope_attention_factor(cfg.rope) == pytest.approx(scale)
    if cfg.attention == "mla":  # DeepseekV2Attention.scaling
        assert attention_scale(cfg) == pytest.approx(yarn_apply_mscale(ref.rope_parameters, ref.qk_head_dim**-0.5))
        assert (cfg.router, cfg.router_groups, cfg.norm_topk_prob) == ("softmax_topk", 1, False)
    else:
        assert (cfg.router, cfg.router_selection_bias, cfg.qk_norm, cfg.qkv_bias, cfg.o_bias) == (
            "sigmoid_topk",
            True,
            None,
            True,
            False,
        )


def test_sigmoid_router_selects_with_the_bias_weights_without_it_and_prunes_whatever_the_bias():
    from rise_jax.models import routers

    z = jnp.asarray([[2.0, 1.0, 0.0, -1.0, -2.0, -3.0]])
    bias = jnp.asarray([0.0, 0.0, 0.0, 0.0, 0.0, 5.0])  # expert 5: lowest score, huge bias
    w, idx = routers.sigmoid_topk(z, 2, True, bias)
    assert sorted(np.asarray(idx)[0].tolist()) == [0, 5]
    s = jax.nn.sigmoid(z)[0]
    np.testing.assert_allclose(np.sort(np.asarray(w)[0]), np.sort(np.asarray([s[0], s[5]]) / (s[0] + s[5])), rtol=1e-6)
    pruned = z.at[0, 5].set(-jnp.inf)  # what RouterEdit.prune does to the logit
    _, idx = routers.sigmoid_topk(pruned, 2, True, bias)
    assert sorted(np.asarray(idx)[0].tolist()) == [0, 1]
    # groups of 2 scored by the sum of their two biased scores: group {4, 5} wins with the bias
    _, idx = routers.sigmoid_topk(z, 2, False, bias, groups=3, topk_groups=1)
    assert sorted(np.asarray(idx)[0].tolist()) == [4, 5]
