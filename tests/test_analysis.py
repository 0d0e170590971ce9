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
    # The paper's Table 2 "Avg." is the mean of the (non-empty) zone means; "all" the mean over layers.
    np.testing.assert_allclose(z["avg"], [1, (2 / 3 + 1 / 6) / 2])
    np.testing.assert_allclose(z["all"], [1, (1 + 1 / 3 + 0 + 1 / 3) / 4])
    unequal = analysis.zone_averages(np.array([[1.0, 1, 1, 0, 0, 0, 0, 0]]), (0.375, 0.25))  # zones 3 / 2 / 3
    np.testing.assert_allclose(unequal["avg"], [1 / 3])
    np.testing.assert_allclose(unequal["all"], [3 / 8])
    assert analysis.zone_of_layers(12) == ["shallow"] * 4 + ["middle"] * 4 + ["deep"] * 4


def test_parallel_divergence_matches_sentences_by_id():
    ref = np.array([[[0.5, 0.5]], [[1.0, 0.0]]])  # ids a, b
    lang = np.array([[[1.0, 0.0]], [[0.5, 0.5]], [[0.3, 0.7]]])  # ids b, a, c (c unmatched)
    curve, n = analysis.parallel_divergence(lang, ["b", "a", "c"], ref, ["a", "b"])
    assert n == 2
    np.testing.assert_allclose(curve, [0.0], atol=1e-12)


def test_entropy_and_top_experts():
    np.testing.assert_allclose(analysis.study_entropy(np.array([0.5, 0.5])), np.log(2))
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


def test_entropy_normalised_jsd_is_the_study_definition_with_its_clamp():
    # p = (1, 0), q = (.5, .5), E = 2: m = (.75, .25); JS = ½ ln(4/3) + ¼ ln(2/3) + ¼ ln 2,
    # denominator ln 2 − (0 + ln 2)/2 = ½ ln 2 (H(p) = −ln(1 + 1e-10) ≈ 0).
    js = 0.5 * np.log(4 / 3) + 0.25 * np.log(2 / 3) + 0.25 * np.log(2)
    got = analysis.entropy_normalised_jsd(np.array([1.0, 0.0]), np.array([0.5, 0.5]))
    np.testing.assert_allclose(got, js / (0.5 * np.log(2)), rtol=1e-8)
    assert analysis.entropy_normalised_jsd(np.full(4, 0.25), np.full(4, 0.25)) == 0.0
    # Two near-uniform distributions: ln E − mean entropy falls below 1e-6 and is clamped there.
    p, q = np.array([0.5, 0.5]), np.array([0.5 + 3e-4, 0.5 - 3e-4])
    h = lambda x: -np.sum(x * np.log(x + 1e-10))  # noqa: E731
    assert np.log(2) - 0.5 * (h(p) + h(q)) < 1e-6
    m = (p + q) / 2
    js = 0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m))
    np.testing.assert_allclose(analysis.entropy_normalised_jsd(p, q), js / 1e-6, rtol=1e-6)
    # Not JS over the mixture's entropy: p=(1,0), q=(.5,.5), m=(.75,.25), JS = H(m) - (0 + ln2)/2.
    mix = np.array([0.75, 0.25])
    h_mix = -(mix * np.log(mix)).sum()
    over_mixture_entropy = (h_mix - 0.5 * np.log(2)) / h_mix
    assert not np.isclose(
        analysis.entropy_normalised_jsd(np.array([1.0, 0.0]), np.array([0.5, 0.5])), over_mixture_entropy
    )


def test_parallel_pairing_survives_sentences_dropped_on_either_side():
    rng = np.random.default_rng(0)
    ref = rng.dirichlet(np.ones(4), size=(5, 2))  # ids 0..4, 2 layers
    lang = ref[[4, 2, 0]].copy()  # ids 4, 2, 0 (1 and 3 dropped), reordered, identical routing
    lang_ids = ["4", "2", "0"]
    curve, n = analysis.parallel_divergence(lang, lang_ids, ref, [str(i) for i in range(5)])
    assert n == 3
    np.testing.assert_allclose(curve, 0.0, atol=1e-9)  # each sentence met its own parallel
    shifted, _ = analysis.parallel_divergence(lang, ["0", "1", "2"], ref, [str(i) for i in range(5)])
    assert (shifted > 1e-3).all()  # pairing by position would have been wrong


def test_inter_token_consistency_and_sequence_entropy_by_hand():
    import jax.numpy as jnp

    from rise_jax.routing.stats import _pairwise_consistency

    # One layer, two sequences, k = 2 of E = 4. Sequence 0: {0,1}, {0,1}, {2,3} -> pairs 1, 0, 0 -> 1/3.
    # Sequence 1: {0,1}, {1,2}, padding -> one pair, |∩| = 1, |∪| = 3 -> 1/3; padding never counts.
    sets = [[[0, 1], [0, 1], [2, 3]], [[0, 1], [1, 2], [2, 3]]]
    sel = np.zeros((1, 2, 3, 4), np.float32)
    for b, seq in enumerate(sets):
        for t, chosen in enumerate(seq):
            sel[0, b, t, chosen] = 1
    mask = np.array([[1, 1, 1], [1, 1, 0]], np.int32)
    sel *= mask[None, :, :, None]
    got = np.asarray(_pairwise_consistency(jnp.asarray(sel), jnp.asarray(mask), 2))  # [L, B, 1 segment]
    np.testing.assert_allclose(got[..., 0], [[1 / 3, 1 / 3]], rtol=1e-6)
    # The same two sequences packed into one row (segments 1 and 2): pairs never cross them.
    packed = np.concatenate([sel[:, 0], sel[:, 1, :2]], axis=1)[:, None]  # [L, 1, 5, E]
    got = np.asarray(_pairwise_consistency(jnp.asarray(packed), jnp.asarray([[1, 1, 1, 2, 2]]), 2, 2))
    np.testing.assert_allclose(got, [[[1 / 3, 1 / 3]]], rtol=1e-6)


def test_performance_alignment_equals_scipy_and_the_stage_writes_table_and_plot(tmp_path):
    import json
    import os

    from scipy import stats as sps

    from rise_jax import launch
    from rise_jax.configs import base

    div = {  # 4 MoE layers; the middle zone [1, 2] is given by analysis.json below
        "bn": [0.9, 0.5, 0.4, 0.8],
        "sw": [0.8, 0.7, 0.6, 0.9],
        "fi": [0.3, 0.2, 0.1, 0.4],
        "zh": [0.5, 0.3, 0.35, 0.6],
    }
    scores = {"en": 80.0, "bn": 40.0, "sw": 30.0, "fi": 70.0, "zh": 55.0}
    r = analysis.performance_alignment(scores, div, [1, 2])
    x = [np.mean(div[lang][1:3]) for lang in ("bn", "sw", "fi", "zh")]
    y = [scores[lang] for lang in ("bn", "sw", "fi", "zh")]
    assert r["languages"] == ["bn", "sw", "fi", "zh"] and r["n"] == 4  # English has no curve: left out
    np.testing.assert_allclose(r["pearson_r"], sps.pearsonr(x, y).statistic)
    np.testing.assert_allclose(r["pearson_p"], sps.pearsonr(x, y).pvalue)
    np.testing.assert_allclose(r["spearman_rho"], sps.spearmanr(x, y).statistic)
    assert r["pearson_r"] < -0.9  # more divergence, lower score
    flat = analysis.performance_alignment(dict.fromkeys(div, 50.0), div, [1, 2])
    assert flat["pearson_r"] is None and flat["note"] == "every language has the same scores: correlation undefined"
    with pytest.raises(ValueError, match="at least 3 languages"):
        analysis.performance_alignment({"bn": 1.0, "sw": 2.0}, div, [1])

    wd = tmp_path / "wd"
    (wd / "analysis").mkdir(parents=True)
    (wd / "eval").mkdir()
    (wd / "analysis" / "analysis.json").write_text(
        json.dumps({"divergence": div, "zones": {"shallow": [0, 0], "middle": [1, 2], "deep": [3, 3]}})
    )
    results = {"base": {"belebele": {lang: {"accuracy": s, "n": 10} for lang, s in scores.items()}}}
    (wd / "eval" / "results.json").write_text(json.dumps({"config": {}, "results": results}))
    c = base.get_base_config()
    c.stages = "correlate"
    c.model.checkpoint = str(tmp_path / "unused")  # correlate reads only the two artefacts above
    launch.run(c, str(wd))
    out = json.load(open(wd / "analysis" / "correlation.json"))["belebele"]
    assert out["layers"] == [1, 2] and out["metric"] == "accuracy"
    np.testing.assert_allclose(out["pearson_r"], r["pearson_r"])
    assert os.path.getsize(wd / "analysis" / "correlation_belebele.png") > 1000
    assert "| belebele | accuracy | base | 1–2 | 4 |" in open(wd / "analysis" / "correlation.md").read()
    # The mean of several tasks (a config choice), over the languages all of them scored.
    results["base"]["xnli"] = {lang: {"accuracy": 60.0 - 10 * i, "n": 5} for i, lang in enumerate(("sw", "bn", "zh"))}
    (wd / "eval" / "results.json").write_text(json.dumps({"config": {}, "results": results}))
    c.correlate.tasks, c.correlate.mean = "belebele,xnli", "all"
    launch.run(c, str(wd))
    mean = json.load(open(wd / "analysis" / "correlation.json"))["mean"]
    assert mean["tasks"] == ["belebele", "xnli"] and mean["languages"] == ["bn", "sw", "zh"]
    assert mean["metric"] == "mean(belebele accuracy, xnli accuracy)"
    expected = {"bn": (40 + 50) / 2, "sw": (30 + 60) / 2, "zh": (55 + 40) / 2}
    assert {p["language"]: p["score"] for p in mean["points"]} == expected
    np.testing.assert_allclose(mean["pearson_r"], analysis.performance_alignment(expected, div, [1, 2])["pearson_r"])
    assert "| mean | mean(belebele accuracy, xnli accuracy) | base |" in open(wd / "analysis" / "correlation.md").read()
    c.correlate.mean = "belebele,karaoke"
    with pytest.raises(Exception, match=r"config.correlate: unknown eval task\(s\) \['karaoke'\]"):
        launch.run(c, str(wd))
    c.correlate.mean, c.correlate.variant = "", "steered"
    with pytest.raises(Exception, match="no results for variant 'steered'"):
        launch.run(c, str(wd))


def test_task_and_language_expert_sets_and_their_intersection_by_hand():
    ref = np.zeros((2, 3))  # 2 layers x 3 experts
    task = np.array([[0.5, 0.0, 0.35], [0.0, 0.1, 0.0]])
    langs = {"bn": np.array([[0.0, 0.4, 0.32], [0.0, 0.0, 0.0]]), "sw": np.array([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0]])}
    out = analysis.task_and_language_experts(task, langs, ref, [0.05, 0.2, 0.3, 0.4])
    by_tau = {r["tau"]: r for r in out["sweep"]}
    assert by_tau[0.05]["task"] == [[0, 0], [0, 2], [1, 1]]
    assert by_tau[0.05]["multilingual"] == [[0, 1], [0, 2], [1, 0]]  # max over languages
    assert by_tau[0.05]["overlap"] == [[0, 2]] and by_tau[0.3]["overlap"] == [[0, 2]]
    assert by_tau[0.4]["n_task"] == 1 and by_tau[0.4]["n_multilingual"] == 0 and by_tau[0.4]["n_overlap"] == 0
    assert [r["n_task"] for r in out["sweep"]] == [3, 2, 2, 1]  # monotone in τ
