"""PolyMath: its published rows (the HF Parquet files per level, the GitHub JSONL) read per
language and level, the authors' first-``\\boxed{}`` extraction, answer equivalence and the
difficulty-weighted accuracy (weights 1, 2, 4, 8 over low..top, divided by their sum). The model
is not the subject: a stand-in writes the outputs, so every score here is known in advance."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ml_collections import ConfigDict

from rise_jax.configs import base
from rise_jax.evaluation import polymath as pm
from rise_jax.evaluation.formats import FormatError, main, read_items
from rise_jax.evaluation.tasks import EvalError, run_task

ROWS = {  # level -> (question, answer) rows of one language
    "low": [("Wie viel ist 2+2?", "4"), ("Wie viel ist 10/4?", "$\\frac{5}{2}$")],
    "medium": [("Löse $x^2=9$, $x>0$.", "3")],
    "high": [("Finde $n$.", "$2n - 1$")],
    "top": [("Bestimme $c$.", "$\\{-2,0,2\\}$"), ("Wie groß ist $L$?", "$2^{2024} - 1$")],
}


def _write_language_dir(directory, language="de", fmt="parquet"):
    directory.mkdir(parents=True, exist_ok=True)
    for level, rows in ROWS.items():
        table = [{"id": f"{level}-{language}-{i}", "question": q, "answer": a} for i, (q, a) in enumerate(rows)]
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(table), directory / f"{level}.parquet")
        else:
            (directory / f"{level}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in table), encoding="utf-8")
    return directory


def test_hub_parquet_and_github_jsonl_give_the_same_items_by_level(tmp_path):
    hub = read_items("polymath", "polymath", str(_write_language_dir(tmp_path / "hub" / "de")))
    github = read_items("polymath", "polymath", str(_write_language_dir(tmp_path / "gh" / "de", fmt="jsonl")))
    assert hub == github
    assert [i["level"] for i in hub] == ["low", "low", "medium", "high", "top", "top"]
    assert hub[1] == {"id": "low-de-1", "question": "Wie viel ist 10/4?", "answer": "$\\frac{5}{2}$", "level": "low"}
    # subjects keeps levels; one file alone takes its level from its name; a bad level is named
    assert [i["id"] for i in read_items("polymath", "polymath", str(tmp_path / "hub" / "de"), "top,medium")] == [
        "medium-de-0",
        "top-de-0",
        "top-de-1",
    ]
    assert {i["level"] for i in pm.read_polymath(str(tmp_path / "gh" / "de" / "high.jsonl"))} == {"high"}
    with pytest.raises(FormatError, match="levels hard unknown"):
        pm.read_polymath(str(tmp_path / "hub" / "de"), "de", "hard")
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"id": "x-de-0", "question": "q", "answer": "1"}\n', encoding="utf-8")
    with pytest.raises(FormatError, match=r"rows.jsonl: line 1: not a PolyMath row .*level 'x'"):
        pm.read_polymath(str(bad))


def test_prompt_is_the_problem_then_the_languages_instruction():
    assert pm.polymath_prompt("Finde $n$.", "deu") == (
        "Finde $n$.\n\nHinweis: Bitte setzen Sie die endgültige Antwort in $\\boxed\\{\\}$."
    )
    assert pm.polymath_prompt("Q", "sw", "{instruction} {question}").endswith("$\\boxed\\{\\}$. Q")
    assert len(pm.LANGUAGES) == 18
    with pytest.raises(FormatError, match="no instruction for language 'yo'"):
        pm.instruction("yo")


def test_the_first_boxed_answer_is_extracted_with_spaces_removed():
    assert pm.extract_boxed("so \\boxed{\\frac{1}{ 2}} then \\boxed{3}") == "\\frac{1}{2}"
    assert pm.extract_boxed("$\\boxed{\\{-2, 0, 2\\}}$") == "\\{-2,0,2\\}"
    assert pm.extract_boxed("no box, the answer is 3") is None
    assert pm.extract_boxed("\\boxed{1 + {2") is None  # unbalanced


@pytest.mark.parametrize(
    ("prediction", "answer", "equal"),
    [
        ("4", "4", True),
        ("2.5", "$\\frac{5}{2}$", True),
        ("5/2", "$\\dfrac{5}{2}$", True),
        ("70,000", "70000", True),
        ("50\\%", "50", True),
        ("0.5", "50", True),  # a percentage written as a fraction (the answer /100)
        ("x=3", "3", True),
        ("2n-1", "$2n - 1$", True),
        ("-1+2n", "$2n - 1$", True),  # symbolic
        ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", True),
        ("\\{-2,0,2\\}", "$\\{-2,0,2\\}$", True),
        ("(1,2)", "(1, 2)", True),
        ("(1,2)", "[1, 2]", False),  # an open interval is not a closed one
        ("x+y=3", "3-x-y=0", True),  # equations up to sign
        ("3", "4", False),
        ("", "4", False),
        (None, "4", False),
    ],
)
def test_answer_equivalence(prediction, answer, equal):
    assert pm.answers_equal(prediction, answer) is equal


def test_difficulty_weighted_accuracy_is_the_authors_weighted_mean():
    levels = ["low"] * 4 + ["medium"] * 4 + ["high"] * 4 + ["top"] * 4
    correct = [True] * 4 + [True, True, False, False] + [True, False, False, False] + [False] * 4
    scores = pm.level_scores(levels, correct)
    assert scores["accuracy_low"] == 100 and scores["accuracy_medium"] == 50 and scores["accuracy_high"] == 25
    assert scores["dw_accuracy"] == pytest.approx((1 * 100 + 2 * 50 + 4 * 25 + 8 * 0) / 15)
    assert scores["accuracy"] == pytest.approx(100 * 7 / 16)
    # fewer levels kept: the weights of the levels scored, normalised
    assert pm.level_scores(["low", "top"], [True, False])["dw_accuracy"] == pytest.approx(100 / 9)


class StandIn:
    """What the task uses of an Evaluator: ``render`` and ``generate``; it boxes the right answer
    of every low / medium problem and a wrong one elsewhere."""

    def __init__(self):
        self.prompts = []

    def render(self, prompt, template):
        return f"<{template}>{prompt}"

    def generate(self, prompts, max_new_tokens, desc):
        self.prompts.extend(prompts)
        answers = {q: a for rows in ROWS.values() for q, a in rows}
        out = []
        for p in prompts:
            question = p.split(">", 1)[1].split("\n\n")[0]
            right = question in {q for q, _ in ROWS["low"] + ROWS["medium"]}
            out.append(f"Schritt... \\boxed{{{answers[question].strip('$') if right else '7'}}}")
        return out


def test_the_task_scores_levels_and_saves_its_generations(tmp_path):
    _write_language_dir(tmp_path / "de")
    task = ConfigDict(base.get_base_config().eval.tasks.polymath.to_dict())
    task.path = str(tmp_path / "{lang}")
    ev = StandIn()
    result = run_task(ev, task, "de", 0)
    s = result.scores
    assert (s["accuracy_low"], s["accuracy_medium"], s["accuracy_high"], s["accuracy_top"]) == (100, 100, 0, 0)
    assert s["dw_accuracy"] == pytest.approx(300 / 15) and s["n"] == 6
    assert ev.prompts[0] == "<chat>Wie viel ist 2+2?\n\n" + pm.INSTRUCTIONS["de"]
    first = result.generations[1]
    assert first["prediction"] == "\\frac{5}{2}" and first["score"] == {"correct": True, "level": "low"}
    # max_samples counts per level
    assert run_task(StandIn(), task, "de", 1).scores["n"] == 4
    with pytest.raises(EvalError, match="no data for language sw"):
        run_task(StandIn(), task, "sw", 0)


def test_the_converter_cli_writes_a_languages_items(tmp_path, capsys):
    _write_language_dir(tmp_path / "de")
    out = tmp_path / "polymath_de.jsonl"
    main(["--format=polymath", f"--input={tmp_path / 'de'}", f"--output={out}", "--subjects=top"])
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["top-de-0", "top-de-1"]
