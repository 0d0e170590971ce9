"""MMLU-ProX as lm-eval 0.4.13 builds it, without a model: the ported phrase and subject tables
give the installed task files' descriptions, answer regexes and stop strings for all 29
languages; our prompts (description, five chain-of-thought exemplars of the item's category from
the validation rows, the item) and our extracted answers and exact-match scores equal lm-eval's
own ``ConfigurableTask`` (its YAML included as it ships, pointed at local rows) on the same rows;
the task kind runs them through a stand-in model."""

import glob
import importlib.util
import json
import os

import pytest
import yaml
from ml_collections import ConfigDict

from rise_jax.configs import base
from rise_jax.evaluation import mmlu_prox as mp
from rise_jax.evaluation.formats import FormatError, read_items
from rise_jax.evaluation.tasks import EvalError, run_task

LM_EVAL_TASKS = os.path.join(os.path.dirname(importlib.util.find_spec("lm_eval").origin), "tasks", "mmlu_prox")


class _Loader(yaml.CSafeLoader):
    """lm-eval's task YAMLs with their ``!function`` tags read as plain strings."""


_Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _yaml(path):
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_Loader)


def test_tables_give_the_installed_descriptions_regexes_and_stop_strings_of_every_language():
    languages = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(f"{LM_EVAL_TASKS}/*/utils.py"))
    languages.remove("template")
    assert sorted(mp.LANGUAGES) == languages and len(languages) == 29
    for lang in languages:
        template = _yaml(f"{LM_EVAL_TASKS}/{lang}/_{lang}_template_yaml")
        assert template["filter_list"][0]["filter"][0]["regex_pattern"] == mp.answer_regex(lang), lang
        assert tuple(template["generation_kwargs"]["until"]) == mp.stop_sequences(lang), lang
        assert template["num_fewshot"] == mp.DEFAULT_SHOTS and template["generation_kwargs"]["max_gen_toks"] == 2048
        for category in mp.CATEGORIES:
            task = _yaml(f"{LM_EVAL_TASKS}/{lang}/mmlu_prox_{lang}_{category}.yaml")
            assert task["description"] == mp.description(lang, category.replace("_", " ")), (lang, category)
    with pytest.raises(FormatError, match="MMLU-ProX has no prompt words for language 'fi'"):
        mp.phrases("fi")


def _row(i, category, lang, n_options=7, answer="B", cot=True):
    words = mp.PHRASES[lang]
    row = {
        "question_id": 100 + i,
        "question": f"#{i}: {category}?",
        "answer": answer,
        "answer_index": "ABCDEFGHIJ".index(answer),
        "category": category,
        "src": "test",
        "cot_content": f"{words.exemplar_cue} Step {i}. {words.answer_phrase.format(answer)}." if cot else "",
    }
    for k in range(10):
        row[f"option_{k}"] = f"option {k} of {i}" if k < n_options else None
    return row


def _splits(lang):
    """Test rows (two categories) and validation rows: six of biology around one of law, so the
    first-five sampler skips the law row and leaves the sixth biology row out."""
    test = [_row(0, "biology", lang), _row(1, "law", lang, n_options=10, answer="J"), _row(2, "biology", lang, 4, "A")]
    validation = [_row(10 + i, "biology", lang, answer="CDEFGH"[i]) for i in range(6)]
    validation.insert(2, _row(20, "law", lang))
    validation += [_row(21 + i, "law", lang) for i in range(4)]
    return {"test": test, "validation": validation}


def _write(tmp_path, lang):
    paths = {}
    for split, rows in _splits(lang).items():
        paths[split] = tmp_path / f"{lang}_{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}


def _outputs(lang):
    """One output per test row: two answer phrases (the first counts), one, none."""
    phrase = mp.PHRASES[lang].answer_phrase
    return [f"Step... {phrase.format('B')}. {phrase.format('C')}", f"{phrase.format('J')}", "I do not know."]


@pytest.mark.parametrize("lang", ["en", "zh", "ar"])
def test_prompts_answers_and_exact_match_equal_lm_evals_own_task(lang, tmp_path):
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    paths = _write(tmp_path, lang)
    items = read_items("mmlu_prox", "mmlu_prox", paths["test"], language=lang)
    exemplars = read_items("mmlu_prox", "mmlu_prox", paths["validation"], language=lang)
    ours = [mp.prompt(i, exemplars, 5) for i in items]
    outputs = _outputs(lang)
    extracted = [mp.extract_answer(o, lang) for o in outputs]
    correct = [mp.exact_match(e, i["answer"]) for e, i in zip(extracted, items, strict=True)]
    for category in ("biology", "law"):  # lm-eval: one task per category
        config = load_yaml(f"{LM_EVAL_TASKS}/{lang}/mmlu_prox_{lang}_{category}.yaml")
        config.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": paths})
        task = ConfigurableTask(config=config)
        task.build_all_requests(limit=None, rank=0, world_size=1)
        for instance in task.instances:
            k = next(j for j, i in enumerate(items) if i["id"] == str(instance.doc["question_id"]))
            assert instance.arguments[0] == ours[k], (lang, category, k)
            instance.resps = [outputs[k]]
        task.apply_filters()
        for instance in task.instances:
            k = next(j for j, i in enumerate(items) if i["id"] == str(instance.doc["question_id"]))
            theirs = instance.filtered_resps["custom-extract"]
            assert theirs == extracted[k], (lang, k)
            assert task.process_results(instance.doc, [theirs])["exact_match"] == float(correct[k])
    assert correct == [True, True, False] and extracted[2] == mp.FALLBACK
    assert mp.extract_answer(mp.PHRASES[lang].answer_phrase.format("j"), lang) == mp.FALLBACK  # letters A-J only


class StandIn:
    """``render`` and ``generate`` of an Evaluator: answers right, then runs on into a new question."""

    def __init__(self, lang):
        self.lang, self.prompts = lang, []

    def render(self, prompt, template):
        return prompt

    def generate(self, prompts, max_new_tokens, desc):
        self.prompts.extend(prompts)
        words = mp.PHRASES[self.lang]
        answers = {"#0:": "B", "#1:": "J", "#2:": "D"}  # the last one wrong
        out = []
        for p in prompts:
            mark = next(m for m in answers if m in p.rsplit(words.question, 1)[1])
            out.append(f" Step. {words.answer_phrase.format(answers[mark])}.\n\n{words.question} more? ")
        return out


def test_the_task_cuts_at_the_stop_strings_and_scores_exact_match(tmp_path):
    paths = _write(tmp_path, "de")
    task = ConfigDict(base.get_base_config().eval.tasks.mmlu_prox.to_dict())
    task.path, task.fewshot_path = paths["test"], paths["validation"]
    ev = StandIn("de")
    result = run_task(ev, task, "de", 0)
    assert result.scores["exact_match"] == pytest.approx(200 / 3) and result.scores["n"] == 3
    record = result.generations[0]
    assert record["output"] == " Step. Die Antwort ist (B).\n\n" and record["prediction"] == "B"
    assert ev.prompts[0].startswith(mp.description("de", "biology")) and ev.prompts[0].count("Frage:") == 6
    task.subjects = "law"
    assert run_task(StandIn("de"), task, "de", 0).scores["n"] == 1
    task.subjects, task.shots = "", 9
    with pytest.raises(EvalError, match="9 few-shot exemplars asked, the few-shot file has 6 of category 'biology'"):
        run_task(StandIn("de"), task, "de", 0)
