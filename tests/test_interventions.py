"""Pruning and steering act on the routers exactly as specified, for both router types."""

import jax.numpy as jnp
import numpy as np
import pytest
from hf_reference import padded_batch

import rise_jax
from rise_jax.evaluation import interventions as iv


@pytest.fixture(params=["qwen", "phi"])
def loaded(request, qwen_dir, phi_dir):
    path = qwen_dir if request.param == "qwen" else phi_dir
    model, params = rise_jax.load_model(path, dtype="float32", progress=False)
    ids, mask = padded_batch(model.cfg.vocab_size, [12, 7], 12, [False, True], seed=3)
    return model, params, jnp.asarray(ids), jnp.asarray(mask)


def _routing(model, params, ids, mask, edit=None):
    out = rise_jax.forward(model, params, ids, mask, return_routing=True, router_edit=edit)
    return np.asarray(out.logits), np.asarray(out.routing.topk_indices)


def test_pruned_experts_never_appear_and_others_take_over(loaded):
    model, params, ids, mask = loaded
    _, base_idx = _routing(model, params, ids, mask)
    # Prune the most used expert of every layer.
    most = [(layer, int(np.bincount(base_idx[layer].ravel()).argmax())) for layer in range(model.cfg.num_moe_layers)]
    _, idx = _routing(model, params, ids, mask, iv.prune(model.cfg, most))
    for layer, expert in most:
        assert not np.any(idx[layer] == expert)
    assert idx.shape == base_idx.shape  # still k experts per token: the next-best took over


def test_hard_steering_puts_the_expert_in_every_tokens_top_k_in_the_layer_range(loaded):
    model, params, ids, mask = loaded
    _, base_idx = _routing(model, params, ids, mask)
    target = int(np.bincount(base_idx[0].ravel(), minlength=model.cfg.num_experts).argmin())  # rarely used
    layers = range(1, model.cfg.num_moe_layers)
    _, idx = _routing(model, params, ids, mask, iv.steer(model.cfg, [target], layers, mode="hard"))
    for layer in layers:
        assert np.all(np.any(idx[layer] == target, axis=-1))
    np.testing.assert_array_equal(idx[0], base_idx[0])  # outside the range: untouched


def test_soft_steering_with_zero_strength_is_the_identity_and_positive_strength_acts(loaded):
    model, params, ids, mask = loaded
    base_logits, base_idx = _routing(model, params, ids, mask)
    layers = range(model.cfg.num_moe_layers)
    logits, idx = _routing(model, params, ids, mask, iv.steer(model.cfg, [0, 1], layers, strength=0.0))
    np.testing.assert_array_equal(logits, base_logits)
    np.testing.assert_array_equal(idx, base_idx)
    _, idx = _routing(model, params, ids, mask, iv.steer(model.cfg, [0], layers, strength=3.0))
    assert np.mean(idx == 0) > np.mean(base_idx == 0)


def test_edits_compose_and_identity_edit_changes_nothing(loaded):
    model, params, ids, mask = loaded
    base_logits, _ = _routing(model, params, ids, mask)
    logits, _ = _routing(model, params, ids, mask, iv.no_edit(model.cfg))
    np.testing.assert_array_equal(logits, base_logits)
    both = iv.steer(model.cfg, [2], [0], mode="hard", edit=iv.prune(model.cfg, [(1, 3)]))
    assert bool(both.prune[1, 3]) and bool(both.hard[0, 2])


def test_intervention_errors_name_the_bad_index(qwen_dir):
    model, _ = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    cfg = model.cfg
    with pytest.raises(iv.InterventionError, match=f"expert {cfg.num_experts} out of range"):
        iv.prune(cfg, [(0, cfg.num_experts)])
    with pytest.raises(iv.InterventionError, match="MoE layer 99"):
        iv.steer(cfg, [0], [99])
    with pytest.raises(iv.InterventionError, match="unknown steering mode"):
        iv.steer(cfg, [0], [0], mode="medium")


def test_experts_by_frequency_difference():
    a = np.array([[0.5, 0.1], [0.2, 0.9]])
    b = np.array([[0.1, 0.1], [0.2, 0.3]])
    assert iv.experts_by_frequency_difference(a, b, 0.3) == [(0, 0), (1, 1)]
    assert iv.experts_by_frequency_difference(a, b, 0.5) == [(1, 1)]


def test_per_layer_steering_changes_exactly_the_named_logits(loaded):
    from rise_jax.models.routers import edit_logits

    model, params, ids, mask = loaded
    cfg = model.cfg
    pairs = [(0, 1), (0, 3), (2, 0)]  # a different set per layer, layer 1 untouched
    for mode in ("soft", "hard", "deactivate"):
        edit = iv.steer_pairs(cfg, pairs, mode, 0.5, seed=3)
        z = np.random.default_rng(0).normal(size=(5, cfg.num_experts)).astype(np.float32)
        for layer in range(cfg.num_moe_layers):
            rows = [np.asarray(a)[layer] for a in edit.rows(0, cfg.num_moe_layers)]
            out = np.asarray(edit_logits(jnp.asarray(z), *map(jnp.asarray, rows)))
            named = {e for lyr, e in pairs if lyr == layer}
            changed = {int(e) for e in np.nonzero(np.any(out != z, axis=0))[0]}
            assert changed == named, (mode, layer)
            for e in named:
                if mode == "soft":
                    np.testing.assert_allclose(out[:, e], z[:, e] + 0.5 * z.std(-1), rtol=1e-5)
                elif mode == "deactivate":
                    assert (out[:, e] < z.min(-1)).all()
                else:
                    assert (out[:, e] > z.max(-1)).all()


def test_hard_steering_jitter_is_seeded_and_of_the_studys_scale(loaded):
    model, *_ = loaded
    cfg = model.cfg
    experts = list(range(min(cfg.top_k, 2)))
    a = iv.steer(cfg, experts, range(cfg.num_moe_layers), "hard", seed=7)
    b = iv.steer(cfg, experts, range(cfg.num_moe_layers), "hard", seed=7)
    c = iv.steer(cfg, experts, range(cfg.num_moe_layers), "hard", seed=8)
    ja, jc = np.asarray(a.hard_jitter), np.asarray(c.hard_jitter)
    assert np.array_equal(ja, np.asarray(b.hard_jitter)) and not np.array_equal(ja, jc)
    assert (ja[:, len(experts) :] == 0).all()  # only the steered experts get a jitter
    big = iv.steer(cfg, list(range(cfg.top_k)), range(cfg.num_moe_layers), "hard", seed=1)
    draws = np.asarray(big.hard_jitter)[:, : cfg.top_k].ravel()
    assert 0 < np.abs(draws).max() < 1e-5 and np.abs(draws).mean() > 1e-8  # N(0, 1e-6)


def test_deactivation_removes_the_expert_from_every_tokens_top_k(loaded):
    model, params, ids, mask = loaded
    _, base_idx = _routing(model, params, ids, mask)
    most = int(np.bincount(base_idx[0].ravel()).argmax())
    _, idx = _routing(model, params, ids, mask, iv.steer(model.cfg, [most], [0], "deactivate"))
    assert not np.any(idx[0] == most) and np.any(base_idx[0] == most)
