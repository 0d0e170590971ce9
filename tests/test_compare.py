"""``python -m rise_jax.compare``: config keys that differ, selection overlap, eval deltas, errors."""

import json
import os
import re

import pytest

from rise_jax import compare
from rise_jax.workdir import Workdir


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh)


def _run(root, k, experts, ppl, seed=0):
    """A workdir with pipeline records, a selection and eval results (hand-written)."""
    wd = Workdir(str(root))
    base_cfg = {"data": {"path": f"{root}/demo/corpus/dev", "languages": "en,bn"}, "seed": seed}
    _write(
        wd.record("stats"), {"stage": "stats", "config": base_cfg, "status": "done", "finished": "2026-01-01 10:00:00"}
    )
    select_cfg = {**base_cfg, "select": {"k": k, "method": "rise"}}
    _write(
        wd.record("select"),
        {"stage": "select", "config": select_cfg, "status": "done", "finished": "2026-01-01 10:00:05"},
    )
    _write(
        wd.selection,
        {
            "method": "rise",
            "params": {"k": k, "alpha": 10.0},
            "target_language": "bn",
            "num_selected": len(experts),
            "experts": [{"layer": la, "expert": e, "zone": "middle", "scores": {}} for la, e in experts],
        },
    )
    results = {
        variant: {"perplexity": {lang: {"perplexity": v, "n": 4} for lang, v in values.items()}}
        for variant, values in ppl.items()
    }
    _write(wd.eval_results, {"config": {"tasks": {"perplexity": {"kind": "perplexity"}}}, "results": results})
    return str(root)


@pytest.fixture
def runs(tmp_path):
    a = _run(
        tmp_path / "a",
        4,
        [(0, 1), (0, 2), (1, 3), (2, 4)],
        {"base": {"bn": 2.63, "en": 1.9}, "trained": {"bn": 1.64, "en": 1.9249}},
    )
    b = _run(
        tmp_path / "b",
        3,
        [(0, 1), (1, 3), (1, 5)],
        {"base": {"bn": 2.63, "en": 1.9}, "trained": {"bn": 1.70, "en": 1.9151}, "pruned": {"bn": 3.0}},
        seed=1,
    )
    return a, b


def test_compare_reports_config_selection_and_eval_differences(runs, tmp_path):
    a, b = runs
    out = str(tmp_path / "out")
    text, files = compare.compare(a, b, out)
    # Config: select.k and seed differ; data.path differs only by the workdir, so it is not listed.
    assert "| `select.k` | `4` | `3` |" in text and "| `seed` | `0` | `1` |" in text
    assert "data.path" not in text
    # Selection: shared (0,1) and (1,3) of 4 and 3 -> Jaccard 2/5; per layer too.
    assert "Shared experts: **2** of 4 (A) and 3 (B); Jaccard **0.40**." in text
    assert (
        "| 0 | 2 | 1 | 1 | 0.50 |" in text and "| 1 | 1 | 2 | 1 | 0.50 |" in text and "| 2 | 1 | 0 | 0 | 0.00 |" in text
    )
    # Eval: the variants both ran, on the primary metric, B − A consistent with the values shown.
    assert "| trained | perplexity | bn | perplexity | 1.640 | 1.700 | +0.060 |" in text
    assert "| trained | perplexity | en | perplexity | 1.925 | 1.915 | -0.010 |" in text
    assert "pruned" not in text
    assert files == [os.path.join(out, "compare.md"), os.path.join(out, "compare.html")]
    page = open(files[1], encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and "<code>select.k</code>" in page and "http" not in page


def test_compare_cli_writes_both_files_and_missing_parts_are_said(runs, tmp_path, capsys):
    a, b = runs
    os.remove(os.path.join(b, "eval", "results.json"))
    out = str(tmp_path / "cli")
    compare.cli(["compare", a, b, "--out", out])
    printed = capsys.readouterr().out
    assert "No `eval/results.json` in B (the eval stage has not run)." in printed
    assert sorted(os.listdir(out)) == ["compare.html", "compare.md"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: str(tmp / "nowhere"), r"error: .*nowhere: no such workdir\n$"),
        (lambda tmp: _empty(tmp), r"error: .*: not a rise_jax workdir \(no \.rise/<stage>\.json records"),
        (lambda tmp: _broken(tmp), r"error: .*selection\.json: unreadable selection: "),
    ],
)
def test_compare_errors_are_one_line_with_status_2(runs, tmp_path, capsys, make, message):
    a, _ = runs
    with pytest.raises(SystemExit) as exit_info:
        compare.cli(["compare", a, make(tmp_path / "x")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def _empty(tmp):
    os.makedirs(tmp, exist_ok=True)
    return str(tmp)


def _broken(tmp):
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "selection.json"), "w") as fh:
        fh.write("{not json")
    return str(tmp)


def test_compare_cli_needs_two_workdirs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.cli(["compare", "only_one"])
    assert exit_info.value.code == 2 and "usage: python -m rise_jax.compare" in capsys.readouterr().err
