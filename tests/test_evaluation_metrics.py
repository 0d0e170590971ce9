"""SQuAD F1/EM with language-aware normalisation and MGSM number extraction on known cases."""

import pytest

from rise_jax.evaluation.metrics import (
    best_over_golds,
    exact_match,
    extract_last_number,
    f1_score,
    mgsm_correct,
    normalize_answer,
)


def test_squad_normalisation_strips_english_articles_only_for_english():
    assert normalize_answer("The  Eiffel Tower!", "en") == "eiffel tower"
    assert normalize_answer("The  Eiffel Tower!", "de") == "the eiffel tower"
    assert normalize_answer("ঢাকা।", "bn") == "ঢাকা"  # the danda is punctuation
    assert normalize_answer("«Москва», город", "ru") == "москва город"


def test_squad_f1_and_exact_match_on_known_values():
    assert exact_match("the cat", "Cat.") == 1.0
    assert f1_score("the black cat sat", "a black cat") == pytest.approx(2 * (2 / 3) * 1.0 / (2 / 3 + 1.0))
    assert f1_score("dog", "cat") == 0.0
    assert f1_score("", "") == 1.0 and f1_score("x", "") == 0.0
    assert best_over_golds(f1_score, "Paris France", ["Lyon", "Paris"]) == pytest.approx(2 / 3)


def test_unspaced_scripts_score_characters():
    assert f1_score("北京市", "北京", "zh") == pytest.approx(0.8)
    assert f1_score("北京市", "北京", "en") == 0.0  # one whitespace token each, different


@pytest.mark.parametrize(
    "text,value",
    [
        ("The answer is 18.", 18.0),
        ("উত্তর হল ১৮।", 18.0),  # Bengali digits
        ("คำตอบคือ ๑๒๕", 125.0),  # Thai digits
        ("答案是１２。", 12.0),  # full-width
        ("She pays $1,234 in total, so 1,234", 1234.0),
        ("Das sind 1.000.000 Euro", 1000000.0),
        ("It costs 3.5 dollars", 3.5),
        ("5 + 6 = 11. Then -4", -4.0),
        ("no digits here", None),
    ],
)
def test_last_number_in_any_script_with_thousands_separators(text, value):
    assert extract_last_number(text) == value


def test_mgsm_answer_matching():
    assert mgsm_correct("ধাপে ধাপে উত্তর: 5 + 6 = ১১", "11")
    assert mgsm_correct("The answer is 1,000.", 1000)
    assert not mgsm_correct("The answer is 10.", "11")
    assert not mgsm_correct("I do not know", "3")
