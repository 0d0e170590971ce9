"""Readers of the general-ability benchmarks' published formats (RISE Table 4: TriviaQA, MMLU,
ARC-Challenge, HellaSwag) and of the multilingual multiple-choice ones (Global-MMLU, INCLUDE,
Global-PIQA, XCOPA, XNLI, XStoryCloze), TriviaQA's official metric, and the converter CLI. Every file is
written here small, in the dataset's published layout."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rise_jax.evaluation import formats, multilingual_mc
from rise_jax.evaluation.formats import FormatError, read_arc, read_hellaswag, read_items, read_mmlu, read_triviaqa
from rise_jax.evaluation.metrics import normalize_triviaqa, triviaqa_scores


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)


# --- MMLU -----------------------------------------------------------------------------------------


def _mmlu_dir(tmp_path):
    """hendrycks/test's data/test layout: header-less <subject>_test.csv files."""
    d = tmp_path / "mmlu" / "test"
    d.mkdir(parents=True)
    for subject in (*formats.MMLU_MEDICAL, "astronomy"):
        _write_csv(
            d / f"{subject}_test.csv",
            [
                [f"A {subject} question, with a comma?", "one", "two", "three", "four", "C"],
                [f"Second {subject} question", "w", "x", "y", "z", "A"],
            ],
        )
    (d / "README.txt").write_text("not a subject file")
    return d


def test_mmlu_csvs_give_lm_eval_zero_shot_prompts_with_letter_choices(tmp_path):
    d = _mmlu_dir(tmp_path)
    items = read_mmlu(str(d))
    assert len(items) == 14 and {i["subject"] for i in items} == {*formats.MMLU_MEDICAL, "astronomy"}
    anatomy = [i for i in items if i["subject"] == "anatomy"]
    assert anatomy[0]["question"] == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "A anatomy question, with a comma?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
    )
    assert anatomy[0]["choices"] == ["A", "B", "C", "D"] and anatomy[0]["answer"] == 2
    assert anatomy[1]["answer"] == 0
    clinical = [i for i in items if i["subject"] == "clinical_knowledge"][0]
    assert "about clinical knowledge.\n\n" in clinical["question"]  # underscores read as spaces
    one_file = read_mmlu(str(d / "astronomy_test.csv"))
    assert [i["subject"] for i in one_file] == ["astronomy", "astronomy"]


def test_mmlu_medical_keeps_the_six_clinical_subjects_and_a_missing_subject_is_named(tmp_path):
    d = _mmlu_dir(tmp_path)
    medical = read_mmlu(str(d), "medical")
    assert {i["subject"] for i in medical} == set(formats.MMLU_MEDICAL) and len(medical) == 12
    assert {i["subject"] for i in read_mmlu(str(d), "astronomy,anatomy")} == {"astronomy", "anatomy"}
    (d / "anatomy_test.csv").unlink()
    with pytest.raises(FormatError, match=r"mmlu/test: no MMLU items for subject\(s\) anatomy"):
        read_mmlu(str(d), "medical")


def test_mmlu_hub_rows_as_parquet_match_the_csv_reading(tmp_path):
    d = _mmlu_dir(tmp_path)
    from_csv = read_mmlu(str(d), "astronomy")
    rows = [
        {
            "question": "A astronomy question, with a comma?",
            "subject": "astronomy",
            "choices": ["one", "two", "three", "four"],
            "answer": 2,
        },
        {"question": "Second astronomy question", "subject": "astronomy", "choices": ["w", "x", "y", "z"], "answer": 0},
        {"question": "An anatomy one", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 3},
    ]
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    from_hub = read_mmlu(str(path), "astronomy")
    assert [(i["question"], i["choices"], i["answer"]) for i in from_hub] == [
        (i["question"], i["choices"], i["answer"]) for i in from_csv
    ]


def test_a_bad_mmlu_row_names_file_and_line(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    _write_csv(d / "virology_test.csv", [["q", "a", "b", "c", "d", "B"], ["q2", "a", "b", "c", "d", "E"]])
    with pytest.raises(FormatError, match=r"virology_test.csv: line 2: not an MMLU row"):
        read_mmlu(str(d))


# --- ARC ------------------------------------------------------------------------------------------


def test_arc_published_jsonl_and_hub_rows_give_the_same_items(tmp_path):
    published = [
        {
            "id": "Mercury_7175875",
            "question": {
                "stem": "An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect?",
                "choices": [
                    {"text": "Planetary density will decrease.", "label": "A"},
                    {"text": "Planetary years will become longer.", "label": "B"},
                    {"text": "Planetary days will become shorter.", "label": "C"},
                    {"text": "Planetary gravity will become stronger.", "label": "D"},
                ],
            },
            "answerKey": "C",
        },
        {  # some ARC questions use numeric labels and have three choices
            "id": "NYSEDREGENTS_2015_4_6",
            "question": {
                "stem": "Which is a gas?",
                "choices": [{"text": t, "label": str(n)} for n, t in enumerate(["ice", "steam", "water"], 1)],
            },
            "answerKey": "2",
        },
    ]
    items = read_arc(_write_jsonl(tmp_path / "ARC-Challenge-Test.jsonl", published))
    assert items[0]["question"].startswith("Question: An astronomer") and items[0]["question"].endswith("?\nAnswer:")
    assert items[0]["choices"][2] == "Planetary days will become shorter." and items[0]["answer"] == 2
    assert items[1]["choices"] == ["ice", "steam", "water"] and items[1]["answer"] == 1
    hub = [
        {
            "id": r["id"],
            "question": r["question"]["stem"],
            "choices": {
                "text": [c["text"] for c in r["question"]["choices"]],
                "label": [c["label"] for c in r["question"]["choices"]],
            },
            "answerKey": r["answerKey"],
        }
        for r in published
    ]
    assert read_arc(_write_jsonl(tmp_path / "hub.jsonl", hub)) == items
    bad = [dict(published[0], answerKey="E")]
    with pytest.raises(FormatError, match=r"bad.jsonl: line 1: not an ARC item \(ValueError: answerKey 'E'"):
        read_arc(_write_jsonl(tmp_path / "bad.jsonl", bad))


# --- HellaSwag ------------------------------------------------------------------------------------


def test_hellaswag_contexts_and_endings_are_cleaned_as_lm_eval_does(tmp_path):
    rows = [
        {
            "ind": 4,
            "activity_label": "Removing ice from car",
            "ctx_a": "Then, the man writes over the snow covering the window of a car, and a woman wearing winter clothes smiles.",
            "ctx_b": "then",
            "endings": [
                ", the man adds wax to the windshield and cuts it.",
                ", a person board a ski lift.",
                ", the man puts on a christmas coat.",
                ", the man continues removing the snow on his car.",
            ],
            "label": "3",
            "split": "val",
        },
        {
            "ind": 9,
            "activity_label": "Home and Garden",
            "ctx_a": "[header] How to plant a tree [title] Dig a hole.",
            "ctx_b": "[step] make it",
            "endings": ["twice as wide [step] as the roots.", "tiny.", "[substeps] very  deep.", "blue."],
            "label": 0,
        },
    ]
    items = read_hellaswag(_write_jsonl(tmp_path / "hellaswag_val.jsonl", rows))
    assert items[0]["question"] == (
        "Removing ice from car: Then, the man writes over the snow covering the window of a car, "
        "and a woman wearing winter clothes smiles. Then"
    )
    assert items[0]["answer"] == 3 and items[0]["choices"][3] == ", the man continues removing the snow on his car."
    # [title] ends a sentence, other [markers] vanish, double spaces collapse; ctx_b capitalised.
    assert items[1]["question"] == "Home and Garden: How to plant a tree. Dig a hole. make it"
    assert items[1]["choices"] == ["twice as wide as the roots.", "tiny.", " very deep.", "blue."]
    assert items[1]["id"] == "9"


# --- TriviaQA -------------------------------------------------------------------------------------

TRIVIA = [
    {
        "Question": "Which Lloyd Webber musical premiered in the US on 10th December 1993?",
        "QuestionId": "tc_33",
        "Answer": {
            "Value": "Sunset Boulevard",
            "Aliases": ["Sunset Blvd", "Sunset Boulevard", "West Sunset Boulevard"],
            "NormalizedValue": "sunset boulevard",
            "Type": "WikipediaEntity",
        },
        "EntityPages": [],
    },
    {
        "Question": "Who was the man behind The Chipmunks?",
        "QuestionId": "tc_40",
        "Answer": {"Value": "David Seville", "Aliases": ["David Seville"], "Type": "WikipediaEntity"},
    },
]


def test_triviaqa_official_json_and_hub_rows_give_the_answer_and_its_aliases(tmp_path):
    path = tmp_path / "verified-web-dev.json"
    path.write_text(json.dumps({"Data": TRIVIA, "Domain": "Web", "Version": 1.0}))
    items = read_triviaqa(str(path))
    assert items[0] == {
        "id": "tc_33",
        "question": TRIVIA[0]["Question"],
        "answers": ["Sunset Boulevard", "Sunset Blvd", "West Sunset Boulevard"],  # value first, deduplicated
    }
    hub = [
        {
            "question": r["Question"],
            "question_id": r["QuestionId"],
            "answer": {"value": r["Answer"]["Value"], "aliases": r["Answer"]["Aliases"]},
        }
        for r in TRIVIA
    ]
    path = tmp_path / "validation.parquet"
    pq.write_table(pa.Table.from_pylist(hub), path)
    assert read_triviaqa(str(path)) == items
    with pytest.raises(FormatError, match=r"no_answer.jsonl: line 1: not a TriviaQA item \(ValueError: no answer"):
        read_triviaqa(
            _write_jsonl(tmp_path / "no_answer.jsonl", [{"question": "q", "answer": {"value": "", "aliases": []}}])
        )


def test_triviaqa_metric_is_the_official_normalisation_over_aliases():
    assert normalize_triviaqa("The  Sunset_Boulevard!") == "sunset boulevard"
    assert normalize_triviaqa("‘Rock’ & Roll´s") == "rock roll s"  # quotes and ASCII symbols are punctuation
    assert normalize_triviaqa("Ça—va") == "ça—va"  # non-ASCII punctuation is kept (the official script)
    em, f1 = triviaqa_scores("sunset blvd.", ["Sunset Boulevard", "Sunset Blvd"])
    assert (em, f1) == (1.0, 1.0)  # an alias matches exactly
    em, f1 = triviaqa_scores("Boulevard of dreams", ["Sunset Boulevard"])
    assert em == 0.0 and f1 == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert triviaqa_scores("", ["x"]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="at least one gold"):
        triviaqa_scores("x", [])


# --- registry, errors, CLI ------------------------------------------------------------------------


def test_formats_are_chosen_by_name_and_misuse_is_named(tmp_path):
    path = _write_jsonl(tmp_path / "ours.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 1}])
    assert read_items("multiple_choice", "jsonl", path)[0]["answer"] == 1
    with pytest.raises(
        FormatError,
        match=r"unknown multiple_choice format 'csv'; choose one of jsonl, mmlu, arc, hellaswag, global_mmlu",
    ):
        read_items("multiple_choice", "csv", path)
    with pytest.raises(
        FormatError,
        match=r"subjects='medical' applies only to formats mmlu, global_mmlu, include, polymath, mmlu_prox, not 'arc'",
    ):
        read_items("multiple_choice", "arc", path, "medical")
    (tmp_path / "broken.jsonl").write_text('{"question": "q"}\nnot json\n')
    with pytest.raises(FormatError, match=r"broken.jsonl: line 2: not JSON"):
        read_items("multiple_choice", "hellaswag", str(tmp_path / "broken.jsonl"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(FormatError, match=r"list.json: row 0: not an open-QA item \(TypeError: expected an object"):
        read_items("open_qa", "jsonl", str(tmp_path / "list.json"))
    with pytest.raises(FormatError, match=r"nowhere.json: missing"):
        read_items("open_qa", "triviaqa", str(tmp_path / "nowhere.json"))


def test_the_converter_cli_writes_our_jsonl(tmp_path, capsys):
    d = _mmlu_dir(tmp_path)
    out = tmp_path / "out" / "mmlu_medical.jsonl"
    out.parent.mkdir()
    formats.main(["--format=mmlu", f"--input={d}", f"--output={out}", "--subjects=medical"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and rows == read_mmlu(str(d), "medical")
    assert "12 multiple_choice items" in capsys.readouterr().out
    path = tmp_path / "trivia.json"
    path.write_text(json.dumps({"Data": TRIVIA}))
    formats.main(["--format=triviaqa", f"--input={path}", f"--output={tmp_path / 'tq.jsonl'}"])
    assert read_items("open_qa", "jsonl", str(tmp_path / "tq.jsonl")) == read_triviaqa(str(path))


# --- multilingual multiple choice (lm-eval's prompts; agreement in test_lm_eval_agreement.py) -----

GM_ROW = dict(
    sample_id="anatomy/test/0",
    subject="anatomy",
    subject_category="Medical",
    cultural_sensitivity_label="CA",
    question=" Où est le cœur ? ",
    option_a="poitrine",
    option_b="tête",
    option_c="jambe",
    option_d="bras",
    answer="A",
)


def _parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


def test_global_mmlu_parquet_rows_subsets_and_a_bad_row(tmp_path):
    rows = [
        GM_ROW,
        {
            **GM_ROW,
            "sample_id": "world_religions/test/3",
            "subject": "world_religions",
            "subject_category": "Humanities",
            "cultural_sensitivity_label": "CS",
            "answer": "D",
        },
    ]
    path = _parquet(tmp_path / "fr_test.parquet", rows)
    items = read_items("multiple_choice", "global_mmlu", path, language="fr")
    assert items[0]["question"] == "Où est le cœur ?\nA. poitrine\nB. tête\nC. jambe\nD. bras\nAnswer:"
    assert items[0]["choices"] == ["A", "B", "C", "D"] and [i["answer"] for i in items] == [0, 3]
    assert [i["id"] for i in read_items("multiple_choice", "global_mmlu", path, "CS", "fr")] == [
        "world_religions/test/3"
    ]
    assert len(read_items("multiple_choice", "global_mmlu", path, "Medical,world_religions", "fr")) == 2
    with pytest.raises(
        FormatError, match=r"no items with subject / subject_category / cultural_sensitivity_label STEM"
    ):
        read_items("multiple_choice", "global_mmlu", path, "STEM", "fr")
    bad = _write_jsonl(tmp_path / "bad.jsonl", [GM_ROW, {**GM_ROW, "answer": "E"}])
    with pytest.raises(FormatError, match=r"bad.jsonl: line 2: not a Global-MMLU item .*answer 'E' is not one of A-D"):
        read_items("multiple_choice", "global_mmlu", bad, language="fr")


def test_include_rows_keep_their_language_and_domain_with_lm_evals_folded_prompt(tmp_path):
    row = dict(
        language="German",
        domain="STEM",
        question="2+2?",
        option_a="3",
        option_b="4",
        option_c="5",
        option_d="6",
        answer=1,
    )
    path = _parquet(
        tmp_path / "include.parquet", [row, {**row, "language": "Greek"}, {**row, "domain": "Driving License"}]
    )
    items = read_items("multiple_choice", "include", path, language="de")
    assert len(items) == 2 and items[0]["answer"] == 1
    assert items[0]["question"] == (
        "The following is multiple-choice question about STEM.2+2?\nA. 3\nB. 4\nC. 5\n D. 6\nAnswer:"
    )
    assert items[0]["description"] == "The following is multiple-choice question about STEM."
    assert [i["subject"] for i in read_items("multiple_choice", "include", path, "Driving License", "de")] == [
        "Driving License"
    ]


def test_global_piqa_non_parallel_and_parallel_rows(tmp_path):
    path = _write_jsonl(
        tmp_path / "piqa.jsonl",
        [
            dict(prompt="To boil water,", solution0="use a pot.", solution1="use a sieve.", label=0),
            dict(prompt="P", solution0="a", solution1="b", solution2="c", solution3="d", label=3),
        ],
    )
    items = read_items("multiple_choice", "global_piqa", path, language="en")
    assert items[0]["question"] == "To boil water," and items[0]["choices"] == ["use a pot.", "use a sieve."]
    assert items[1]["choices"] == ["a", "b", "c", "d"] and items[1]["answer"] == 3


def test_xcopa_published_jsonl_and_the_prompt_words_are_lm_evals(tmp_path):
    import importlib.util
    import os

    import lm_eval

    path = _write_jsonl(
        tmp_path / "test.sw.jsonl",
        [
            dict(
                premise="Mvua ilinyesha.",
                choice1="Barabara ililowa.",
                choice2="Jua.",
                question="effect",
                label=0,
                idx=7,
                changed=False,
            )
        ],
    )
    item = read_items("multiple_choice", "xcopa", path, language="swh")[0]
    assert item["question"] == "Mvua ilinyesha kwa hiyo" and item["choices"] == ["barabara ililowa.", "jua."]
    assert item["id"] == "7"
    with pytest.raises(FormatError, match=r"XCOPA has no prompt words for language 'de'; it has et, ht"):
        read_items("multiple_choice", "xcopa", path, language="de")
    # The connector and label words are lm-eval's, language by language.
    tasks = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    for name in ("xcopa", "xnli"):
        spec = importlib.util.spec_from_file_location(f"lm_eval_{name}_utils", os.path.join(tasks, name, "utils.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if name == "xcopa":
            for code, (cause, effect) in multilingual_mc.XCOPA_CONNECTORS.items():
                doc = dict(premise="P.", question="cause")
                assert getattr(module, f"doc_to_text_{code}")(doc) == f"P {cause}"
                assert getattr(module, f"doc_to_text_{code}")({**doc, "question": "effect"}) == f"P {effect}"
        else:
            words = {
                k: (v["QUESTION_WORD"], v["ENTAILMENT_LABEL"], v["NEUTRAL_LABEL"], v["CONTRADICTION_LABEL"])
                for k, v in module.LANGUAGES.items()
            }
            assert words == multilingual_mc.XNLI_WORDS


def test_xnli_published_tsv_and_hub_rows_give_the_same_items(tmp_path):
    header = ["language", "gold_label", "sentence1_binary_parse", "sentence1", "sentence2", "pairID"]
    tsv = tmp_path / "xnli.test.tsv"
    tsv.write_text(
        "\t".join(header)
        + "\n"
        + "\t".join(["de", "contradiction", "( x )", 'Der "Hund" bellt.', "Es ist still.", "1"])
        + "\n"
        + "\t".join(["fr", "neutral", "( y )", "Le chien.", "Un chat.", "1"])
        + "\n",
        encoding="utf-8",
    )
    from_tsv = read_items("multiple_choice", "xnli", str(tsv), language="de")
    rows = _write_jsonl(tmp_path / "de.jsonl", [dict(premise='Der "Hund" bellt.', hypothesis="Es ist still.", label=2)])
    from_rows = read_items("multiple_choice", "xnli", rows, language="German")
    assert len(from_tsv) == 1 and [i["choices"] for i in from_tsv] == [i["choices"] for i in from_rows]
    assert from_tsv[0]["question"] == "" and from_tsv[0]["answer"] == 2
    assert from_tsv[0]["choices"][0] == 'Der "Hund" bellt., richtig? Ja, Es ist still.'
    tsv.write_text(tsv.read_text(encoding="utf-8").replace("contradiction", "maybe"), encoding="utf-8")
    with pytest.raises(FormatError, match=r"xnli.test.tsv: line 2: not an XNLI item of language de .*'maybe'"):
        read_items("multiple_choice", "xnli", str(tsv), language="de")


def test_xstorycloze_published_tsv_and_hub_rows_give_the_same_items(tmp_path):
    header = [
        "InputStoryid",
        *(f"InputSentence{k}" for k in range(1, 5)),
        "RandomFifthSentenceQuiz1",
        "RandomFifthSentenceQuiz2",
        "AnswerRightEnding",
    ]
    values = ["s1", "Tom was hungry.", "He cooked.", "It burned.", "He sighed.", "He ordered pizza.", "He flew.", "1"]
    tsv = tmp_path / "spring2016.val.en.tsv.split_20_80_eval.tsv"
    tsv.write_text("\t".join(header) + "\n" + "\t".join(values) + "\n", encoding="utf-8")
    hub = dict(
        story_id="s1",
        **{f"input_sentence_{k}": values[k] for k in range(1, 5)},
        sentence_quiz1=values[5],
        sentence_quiz2=values[6],
        answer_right_ending=1,
    )
    from_tsv = read_items("multiple_choice", "xstorycloze", str(tsv), language="en")
    assert from_tsv == read_items(
        "multiple_choice", "xstorycloze", _parquet(tmp_path / "en.parquet", [hub]), language="en"
    )
    assert from_tsv[0]["question"] == "Tom was hungry. He cooked. It burned. He sighed."
    assert from_tsv[0]["answer"] == 0
    tsv.write_text("\t".join(header) + "\n" + "\t".join(values[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(FormatError, match=r"split_20_80_eval.tsv: line 2: 7 columns, the header has 8"):
        read_items("multiple_choice", "xstorycloze", str(tsv), language="en")


def test_the_converter_cli_converts_a_multilingual_format_for_its_language(tmp_path, capsys):
    path = _write_jsonl(tmp_path / "xnli_sw.jsonl", [dict(premise="A.", hypothesis="B.", label=1)])
    out = tmp_path / "xnli_sw_ours.jsonl"
    formats.main(["--format=xnli", f"--input={path}", f"--output={out}", "--language=sw"])
    assert read_items("multiple_choice", "jsonl", str(out)) == read_items(
        "multiple_choice", "xnli", path, language="sw"
    )
    with pytest.raises(FormatError, match=r"format 'xnli' needs the language"):
        read_items("multiple_choice", "xnli", path)
