"""FLORES-200 translation: prompts from the template stated in the config, both directions with
English, the first line of the output scored by corpus chrF++ and BLEU equal to ``sacrebleu``
called directly on the same outputs, its signatures recorded. The model is not the subject here
(the eval stage and the demo run it on a real one): a stand-in "translates" by looking up the
reference and dropping a word, so the scores are neither 0 nor 100."""

import os

import pytest
import sacrebleu
from fixture_data import FLORES
from ml_collections import ConfigDict

from rise_jax.configs import base
from rise_jax.evaluation.tasks import EvalError, run_task


def _flores(code, split="test"):
    rows = open(os.path.join(FLORES, code, f"{split}.tsv"), encoding="utf-8").read().splitlines()[1:]
    return {r.split("\t")[0]: r.split("\t")[2] for r in rows}


class StandIn:
    """What the translation task uses of an Evaluator: ``render`` and ``generate``."""

    def __init__(self, source, target):
        self.lookup = {source[i]: target[i] for i in source if i in target}
        self.prompts = []

    def render(self, prompt, template):
        return prompt

    def generate(self, prompts, max_new_tokens, desc):
        self.prompts.extend(prompts)
        outputs = []
        for p in prompts:
            sentence = p.split("\n")[-2].split(": ", 1)[1]
            words = self.lookup[sentence].split(" ")
            outputs.append(" " + " ".join(words[:-1] if len(words) > 2 else words) + "\nnext line\n")
        return outputs


def _task(preset, **kw):
    task = ConfigDict(base.get_base_config().eval.tasks[f"flores_{preset.replace('-', '_')}"].to_dict())
    task.path = FLORES
    task.update(kw)
    return task


@pytest.mark.parametrize(("direction", "language", "code"), [("en-xx", "sw", "swh_Latn"), ("xx-en", "zh", "zho_Hans")])
def test_chrf_and_bleu_equal_sacrebleus_on_the_same_outputs_with_signatures(direction, language, code):
    en, xx = _flores("eng_Latn"), _flores(code)
    source, target = (en, xx) if direction == "en-xx" else (xx, en)
    ev = StandIn(source, target)
    result = run_task(ev, _task(direction), language, max_samples=6)
    ids = list(xx)[:6]
    hyps = [r["prediction"] for r in result.generations]
    refs = [target[i] for i in ids]
    assert [r["reference"] for r in result.generations] == refs and [r["id"] for r in result.generations] == ids
    assert all("next line" not in h for h in hyps) and hyps[0] == " ".join(refs[0].split(" ")[:-1])
    chrf = sacrebleu.corpus_chrf(hyps, [refs], word_order=2)
    trg = "en" if direction == "xx-en" else language
    bleu = sacrebleu.BLEU(trg_lang=trg)
    s = result.scores
    assert s["chrf"] == chrf.score and s["bleu"] == bleu.corpus_score(hyps, [refs]).score
    assert 0 < s["bleu"] < 100 and 0 < s["chrf"] < 100 and s["n"] == 6
    assert s["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:")
    assert "tok:13a" in s["bleu_signature"]
    names = ("English", "Swahili") if direction == "en-xx" else ("Chinese", "English")
    assert ev.prompts[0] == (
        f"Translate the following sentence from {names[0]} to {names[1]}.\n{names[0]}: {source[ids[0]]}\n{names[1]}:"
    )
    first = result.generations[0]
    assert first["score"]["chrf"] == sacrebleu.sentence_chrf(hyps[0], [refs[0]], word_order=2).score


def test_few_shot_pairs_come_first_and_misconfigurations_are_named():
    en, sw = _flores("eng_Latn"), _flores("swh_Latn")
    ev = StandIn(en, sw)
    run_task(ev, _task("en-xx", shots=1, bleu_tokenize="char"), "sw", max_samples=1)
    dev_en, dev_sw = _flores("eng_Latn", "dev"), _flores("swh_Latn", "dev")
    first = next(i for i in dev_sw if i in dev_en)
    assert ev.prompts[0].startswith(
        f"Translate the following sentence from English to Swahili.\nEnglish: {dev_en[first]}\nSwahili: {dev_sw[first]}\n\n"
    )
    with pytest.raises(EvalError, match=r"direction 'en-fr'; choose one of en-xx, xx-en"):
        run_task(ev, _task("en-xx", direction="en-fr"), "sw", 1)
    with pytest.raises(EvalError, match=r"English is the pivot"):
        run_task(ev, _task("en-xx"), "en", 1)
    with pytest.raises(EvalError, match=r"prompt_template: unknown placeholder 'text'"):
        run_task(ev, _task("en-xx", prompt_template="{text}"), "sw", 1)
    with pytest.raises(EvalError, match=r"bleu_tokenize = 'nope' for target 'sw'"):
        run_task(ev, _task("en-xx", bleu_tokenize="nope"), "sw", 1)
