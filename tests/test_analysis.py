"""Routing analysis metrics on hand-made inputs with known answers; plots are written."""

import numpy as np
import pytest

from rise_jax.reporting import plots
from rise_jax.routing import analysis


def test_global_top_n_jaccard_on_known_sets():
    counts = np.zeros((3, 2, 4))
    counts[0, 0, [0, 1]] = 10  # flat indices {0, 1}
    counts[1, 0, [1]] = 10
    counts[1, 1, [0]] = 10  # flat {1, 4}
    counts[2, 0, [0, 1]] = 5  # same set as language 0
    m = analysis.global_jaccard_matrix(counts, n=2)
    np.testing.assert_allclose(m, [[1, 1 / 3, 1], [1 / 3, 1, 1 / 3], [1, 1 / 3, 1]])


def test_layerwise_jaccard_and_zone_averages():
    freq = np.zeros((2, 4, 4))
    freq[0, :, [0, 1]] = 1.0  # reference: experts {0, 1} in every layer
    freq[1, 0, [0, 1]] = 1.0  # same in layer 0 -> 1
    freq[1, 1, [0, 2]] = 1.0  # {0,2} vs {0,1} -> 1/3
    freq[1, 2, [2, 3]] = 1.0  # disjoint -> 0
    freq[1, 3, [1, 3]] = 1.0  # 1/3
    lj = analysis.layerwise_jaccard(freq, ref=0, n=2)
    np.testing.assert_allclose(lj[1], [1, 1 / 3, 0, 1 / 3])
    z = analysis.zone_averages(lj)  # L=4: shallow 0-1, empty middle, deep 2-3
    np.testing.assert_allclose(z["shallow"], [1, 2 / 3])
    assert np.isnan(z["middle"]).all()
    np.testing.assert_allclose(z["deep"], [1, 1 / 6])
    assert analysis.zone_of_layers(12) == ["shallow"] * 4 + ["middle"] * 4 + ["deep"] * 4


def test_normalised_jsd_is_zero_for_equal_and_one_for_disjoint_distributions():
    p = np.array([[0.2, 0.3, 0.5]])
    np.testing.assert_allclose(analysis.normalised_jsd(p, p), [0.0], atol=1e-12)
    np.testing.assert_allclose(analysis.normalised_jsd(np.array([[1.0, 0]]), np.array([[0, 1.0]])), [1.0])
    # Known value: p=(1,0), q=(.5,.5): m=(.75,.25); JSD = H(m) - (0 + ln2)/2.
    m = np.array([0.75, 0.25])
    h_m = -(m * np.log(m)).sum()
    want = (h_m - 0.5 * np.log(2)) / h_m
    np.testing.assert_allclose(analysis.normalised_jsd(np.array([[1.0, 0]]), np.array([[0.5, 0.5]])), [want])


def test_parallel_divergence_matches_sentences_by_id():
    ref = np.array([[[0.5, 0.5]], [[1.0, 0.0]]])  # ids a, b
    lang = np.array([[[1.0, 0.0]], [[0.5, 0.5]], [[0.3, 0.7]]])  # ids b, a, c (c unmatched)
    curve, n = analysis.parallel_divergence(lang, ["b", "a", "c"], ref, ["a", "b"])
    assert n == 2
    np.testing.assert_allclose(curve, [0.0], atol=1e-12)


def test_entropy_and_top_experts():
    np.testing.assert_allclose(analysis.entropy(np.array([0.5, 0.5])), np.log(2))
    assert analysis.top_experts(np.array([[0.1, 0.7, 0.2], [0.3, 0.3, 0.4]]), 2) == [[1, 2], [2, 0]]


def test_plots_are_written_and_non_empty(tmp_path):
    langs = ["en", "bn", "sw"]
    paths = [
        plots.overlap_heatmap(np.eye(3), langs, str(tmp_path / "o.png"), "overlap"),
        plots.layer_curves(np.random.rand(3, 12), langs, str(tmp_path / "l.png"), "curves", "J"),
        plots.activation_heatmap(np.random.rand(12, 16), str(tmp_path / "a.png"), "activation"),
        plots.selection_map(
            12, 16, [(0, 1, "shallow"), (5, 2, "middle"), (11, 3, "deep")], str(tmp_path / "s.png"), "map"
        ),
    ]
    for p in paths:
        data = open(p, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_routing_isolation_as_numbers_within_and_between_resource_groups():
    from rise_jax.data.languages import resource_groups
    from rise_jax.routing.analysis import group_overlap

    groups = resource_groups(["en", "es", "bn", "sw", "amh"])
    assert groups == {"en": "high", "es": "high", "bn": "low", "sw": "low", "amh": "low"}
    assert resource_groups(["en", "es", "bn"], "es,Bengali") == {"en": "high", "es": "low", "bn": "low"}
    m = np.array([[1.0, 0.8, 0.1, 0.3], [0.8, 1.0, 0.2, 0.0], [0.1, 0.2, 1.0, 0.5], [0.3, 0.0, 0.5, 1.0]])
    got = group_overlap(m, ["high", "high", "low", "low"])
    assert got == pytest.approx({"within_high": 0.8, "within_low": 0.5, "between": 0.15})
    assert group_overlap(m, ["high", "low", "low", "low"])["within_high"] is None
