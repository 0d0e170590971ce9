"""Expert selection: RISE Algorithm 1 budgets, zones, scores, ties; baselines; errors."""

import numpy as np
import pytest

from rise_jax.selection import algorithms as alg


def random_freq(num_lang, num_layers, num_experts, k, seed=0):
    rng = np.random.RandomState(seed)
    counts = rng.rand(num_lang, num_layers, num_experts)
    return counts / counts.sum(-1, keepdims=True) * k


def zone_counts(selection):
    return {z: sum(1 for s in selection if s.zone == z) for z in alg.ZONES}


@pytest.mark.parametrize(
    "layers,experts,k,ratios,want,ranges",
    [
        (48, 128, 128, (0.35, 0.25, 0.40), (44, 32, 52), {"shallow": (0, 18), "middle": (18, 30), "deep": (30, 48)}),
        (32, 16, 16, (0.125, 0.6875, 0.1875), (2, 11, 3), {"shallow": (0, 12), "middle": (12, 20), "deep": (20, 32)}),
    ],
    ids=["qwen3-30b-a3b", "phi-3.5-moe"],
)
def test_full_size_shapes_give_the_papers_budgets_and_zones(layers, experts, k, ratios, want, ranges):
    freq = random_freq(5, layers, experts, 8)
    chosen, budgets = alg.rise_select(freq, target=1, k=k, ratios=ratios)
    assert alg.zone_ranges(layers) == ranges
    assert tuple(budgets[z] for z in alg.ZONES) == want
    assert tuple(zone_counts(chosen)[z] for z in alg.ZONES) == want
    assert len(chosen) == k and len({(s.layer, s.expert) for s in chosen}) == k
    for s in chosen:  # every expert inside its zone
        lo, hi = ranges[s.zone]
        assert lo <= s.layer < hi
    assert [(s.layer, s.expert) for s in chosen] == sorted((s.layer, s.expert) for s in chosen)


def test_empty_middle_zone_spills_to_the_zone_with_most_room():
    assert alg.zone_ranges(4) == {"shallow": (0, 2), "middle": (2, 2), "deep": (2, 4)}
    # K=8: floors 2/2, deep 4; middle has no layers -> its 2 go to shallow (room 14 > deep 12).
    budgets = alg.zone_budgets(8, (0.35, 0.25, 0.40), 4, 8)
    assert budgets == {"shallow": 4, "middle": 0, "deep": 4}
    chosen, _ = alg.rise_select(random_freq(3, 4, 8, 2), 0, 8, (0.35, 0.25, 0.40))
    assert len(chosen) == 8 and zone_counts(chosen) == {"shallow": 4, "middle": 0, "deep": 4}


def test_overflowing_zone_budget_is_spilled_exactly():
    # L=12, E=2: zones 0-3 / 4-7 / 8-11 hold 8 experts each. K=20, ratios (0.1, 0.8, 0.1):
    # floors 2 / 16 / deep 2 -> middle overflows by 8; shallow and deep tie at room 6, shallow
    # (first) takes 8 and overflows by 2, which go to deep: 8 / 8 / 4.
    budgets = alg.zone_budgets(20, (0.1, 0.8, 0.1), 12, 2)
    assert budgets == {"shallow": 8, "middle": 8, "deep": 4}
    chosen, _ = alg.rise_select(random_freq(3, 12, 2, 1), 2, 20, (0.1, 0.8, 0.1))
    assert len(chosen) == 20


def test_scores_equal_hand_computed_values():
    # 3 languages x 1 layer x 3 experts, target = language 0, alpha = 10.
    freq = np.array([[[0.6, 0.4, 0.0]], [[0.2, 0.4, 0.4]], [[0.1, 0.4, 0.5]]])
    s = alg.rise_scores(freq, target=0, alpha=10.0)
    mean = np.array([0.3, 0.4, 0.3])
    std = np.array([np.std([0.6, 0.2, 0.1]), 0.0, np.std([0.0, 0.4, 0.5])])
    np.testing.assert_allclose(s["freq_mean"][0], mean)
    np.testing.assert_allclose(s["specificity"][0], [2.0, 1.0, 0.0])
    np.testing.assert_allclose(s["overlap"][0], 1 / (1 + std / mean))
    np.testing.assert_allclose(s["spec"][0], [2.0 * 7.0, 1.0 * 5.0, 0.0])
    np.testing.assert_allclose(s["ovlp"][0], (1 / (1 + std / mean)) * (1 + 10 * mean))
    # An expert no language uses: denominators become 1e-8, not NaN.
    z = alg.rise_scores(np.zeros((2, 1, 2)), 0)
    assert np.isfinite(z["specificity"]).all() and np.allclose(z["overlap"], 1.0)


def test_ties_break_by_lower_layer_then_lower_expert():
    freq = np.ones((2, 4, 4))  # every score equal
    chosen, _ = alg.rise_select(freq, 0, 3, (1.0, 0.0, 0.0))
    assert [(s.layer, s.expert) for s in chosen] == [(0, 0), (0, 1), (0, 2)]
    top = alg.topk_select(np.ones((3, 3)), 4)
    assert [(s.layer, s.expert) for s in top] == [(0, 0), (0, 1), (0, 2), (1, 0)]


def test_esft_keeps_the_shortest_prefix_reaching_p():
    score = np.array([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4]])
    got = alg.esft_select(score, 0.6, "token")
    assert [(s.layer, s.expert) for s in got] == [(0, 0), (0, 1), (1, 2), (1, 3)]
    exact = alg.esft_select(score, 0.5, "token")  # reaching p exactly stops there
    assert [(s.layer, s.expert) for s in exact if s.layer == 0] == [(0, 0)]


def test_random_is_seeded_and_topk_takes_the_largest():
    a = alg.random_select(8, 16, 10, seed=3)
    b = alg.random_select(8, 16, 10, seed=3)
    c = alg.random_select(8, 16, 10, seed=4)
    assert a == b and a != c and len(a) == 10
    f = np.zeros((2, 3))
    f[1, 2], f[0, 1] = 0.9, 0.5
    assert [(s.layer, s.expert) for s in alg.topk_select(f, 2)] == [(0, 1), (1, 2)]


def test_interference_mass_sums_selected_frequencies():
    freq = np.array([[[0.5, 0.5]], [[0.9, 0.1]]])
    sel = [alg.Selected(0, 1, "deep", {})]
    np.testing.assert_allclose(alg.interference_mass(freq, sel), [0.5, 0.1])


def test_ablation_without_a_zone_moves_its_budget_to_the_others():
    chosen, budgets = alg.rise_select(
        random_freq(3, 48, 8, 2), 0, 40, (0.35, 0.25, 0.40), zones_used=("shallow", "deep")
    )
    assert budgets["middle"] == 0 and sum(budgets.values()) == 40
    assert zone_counts(chosen)["middle"] == 0
    only, b2 = alg.rise_select(random_freq(3, 48, 8, 2), 0, 40, (0.35, 0.25, 0.40), zones_used=("middle",))
    assert b2 == {"shallow": 0, "middle": 40, "deep": 0}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(k=1000), r"K = 1000 exceeds the pool of 384 experts"),
        (dict(ratios=(1.2, 0.0, 0.0)), r"ratio for shallow = 1.2 is outside \[0, 1\]"),
        (dict(ratios=(0.5, 0.4, 0.3)), r"sum to 1.2 > 1"),
        (dict(ratios=(-0.1, 0.5, 0.5)), r"outside \[0, 1\]"),
        (dict(zones_used=("upper",)), r"zones_used must be"),
    ],
)
def test_bad_selection_parameters_are_clear_errors(kwargs, message):
    args = dict(freq=random_freq(3, 48, 8, 2), target=0, k=16, ratios=(0.35, 0.25, 0.40))
    args.update(kwargs)
    with pytest.raises(alg.SelectionError, match=message):
        alg.rise_select(**args)


def test_one_language_is_an_error():
    with pytest.raises(alg.SelectionError, match="at least 2 languages"):
        alg.rise_select(random_freq(1, 4, 4, 2), 0, 2, (0.35, 0.25, 0.40))


def test_scores_tied_in_real_arithmetic_break_by_the_documented_rule_not_round_off():
    """Experts 0 and 1 of layer 0 have Spec = 5 exactly (a = 2/5 for the target, mean 2/5), but
    float64 gives 4.999999999999999 and 5.000000000000001; ranked in float32 (as the reference
    implementation computes) they tie, and the lower expert wins."""
    counts = np.zeros((3, 4, 6))
    counts[:, 0] = [[2, 2, 2, 0, 1, 0], [2, 3, 2, 0, 2, 1], [2, 1, 3, 0, 1, 3]]
    freq = counts / 5
    spec64 = alg.rise_scores(freq, 0, 10.0)["spec"][0]
    assert spec64[1] > spec64[0]  # the round-off this guards against
    chosen, _ = alg.rise_select(freq, 0, 1, (1.0, 0.0, 0.0))
    assert [(s.layer, s.expert) for s in chosen] == [(0, 0)]
    assert chosen[0].scores["spec"] == spec64[0]  # the recorded scores stay float64


def test_zone_ratios_move_the_boundaries_like_the_reference_code():
    """``select.zone_ratios`` = (ρs, ρm): L1 = round(ρs L), L2 = round((ρs + ρm) L); the defaults are
    the paper's, and other ratios move every zone-dependent result (budgets, zones of experts)."""
    from rise_jax.zones import zone_boundaries, zone_spans

    assert zone_boundaries(48) == (18, 30) and zone_boundaries(12) == (4, 8)
    assert zone_boundaries(48, (0.25, 0.5)) == (12, 36)
    assert zone_spans(10, (0.0, 0.5)) == {"shallow": None, "middle": [0, 4], "deep": [5, 9]}
    freq = random_freq(3, 8, 4, 2)
    chosen, budgets = alg.rise_select(freq, 0, 8, (0.5, 0.0, 0.5), zone_ratios=(0.125, 0.5))
    assert budgets == {"shallow": 4, "middle": 0, "deep": 4}  # L1 = round(1.0) = 1, L2 = round(5.0) = 5
    assert all((s.layer < 1) == (s.zone == "shallow") and (s.layer >= 5) == (s.zone == "deep") for s in chosen)
    with pytest.raises(ValueError, match=r"zone ratios \(0.7, 0.5\) must lie in \[0, 1\] and sum to at most 1"):
        zone_boundaries(8, (0.7, 0.5))
