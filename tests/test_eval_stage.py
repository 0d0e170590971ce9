"""The eval stage: tasks x languages x variants, results.json + table.md, resume, clear errors."""

import json
import os

import pytest
from fixture_data import FLORES, MGSM, TINY_TOKENIZER, TINY_VOCAB, TYDIQA
from hf_reference import make_hf_model, save_hf_model

from rise_jax import launch
from rise_jax.configs import base  # noqa: E402
from rise_jax.evaluation.interventions import InterventionError
from rise_jax.evaluation.polymath import LEVELS
from rise_jax.evaluation.tasks import EvalError

MC_ITEMS = [
    {"id": "1", "question": "The capital of France is", "choices": ["Paris", "a banana"], "answer": 0},
    {"id": "2", "question": "Two plus two equals", "choices": ["seven", "four"], "answer": 1},
]


def config(ckpt_dir, tmp):
    c = base.get_base_config()
    c.model.checkpoint = ckpt_dir
    c.model.tokenizer = TINY_TOKENIZER
    c.model.dtype = "float32"
    c.data.path = c.train.data.path = FLORES
    c.data.languages = "en,bn"
    c.data.max_samples = 6
    c.select.k = 4
    c.train.data.max_samples = 6
    c.train.data.max_length = 32
    c.train.epochs = 1
    c.train.grad_accum = 1
    c.train.lr = 1e-2
    c.eval.variants = "base,trained,pruned"
    c.eval.run = "mgsm,tydiqa,perplexity,multiple_choice"
    c.eval.max_samples = 2
    c.eval.progress = False
    c.eval.tasks.mgsm.path = MGSM
    c.eval.tasks.mgsm.max_new_tokens = 6
    c.eval.tasks.tydiqa.path = TYDIQA
    c.eval.tasks.tydiqa.max_new_tokens = 4
    c.eval.tasks.tydiqa.max_prompt_length = 64  # shorter than the passages: truncation is counted
    c.eval.tasks.perplexity.path = FLORES
    c.eval.tasks.perplexity.max_length = 24
    mc = tmp / "mc_{lang}.jsonl"
    for lang in ("en", "bn"):
        (tmp / f"mc_{lang}.jsonl").write_text("\n".join(json.dumps(i) for i in MC_ITEMS) + "\n")
    c.eval.tasks.multiple_choice.path = str(mc)
    return c


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = make_hf_model("qwen3_moe", seed=4, vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=4)
    ckpt = save_hf_model(model, str(tmp_path_factory.mktemp("ck")))
    tmp = tmp_path_factory.mktemp("data")
    wd = str(tmp_path_factory.mktemp("wd"))
    c = config(ckpt, tmp)
    c.stages = "stats,select,train,eval"
    launch.run(c, wd)
    return ckpt, tmp, wd


def test_eval_writes_results_for_every_variant_task_and_language(setup):
    _, _, wd = setup
    doc = json.load(open(os.path.join(wd, "eval", "results.json")))
    res = doc["results"]
    assert set(res) == {"base", "trained", "pruned"}
    for variant in res.values():
        assert set(variant) == {"mgsm", "tydiqa", "perplexity", "multiple_choice"}
        for task in variant.values():
            assert set(task) == {"en", "bn"}
    assert res["base"]["mgsm"]["bn"]["n"] == 2 and 0 <= res["base"]["mgsm"]["bn"]["accuracy"] <= 100
    assert res["base"]["tydiqa"]["en"]["truncated"] == 1  # the one English passage is over 64 tokens
    assert res["base"]["multiple_choice"]["en"]["n"] == 2
    # Training on bn changes bn perplexity; pruning the selected experts changes it too.
    ppl = {v: res[v]["perplexity"]["bn"]["perplexity"] for v in res}
    assert ppl["trained"] != ppl["base"] and ppl["pruned"] != ppl["base"]
    table = open(os.path.join(wd, "eval", "table.md")).read()
    assert "| setting | bn | en | Avg |" in table and "Δ trained" in table and "truncated" in table


def test_eval_rerun_reuses_finished_results(setup, monkeypatch):
    ckpt, tmp, wd = setup
    import rise_jax.stages.evaluate as eval_stage

    def fail(*a, **k):
        raise AssertionError("a finished task was recomputed")

    monkeypatch.setattr(eval_stage, "run_task", fail)
    c = config(ckpt, tmp)
    c.stages = "eval"
    launch.run(c, wd)


def test_eval_errors_are_clear(setup, tmp_path):
    ckpt, tmp, wd = setup
    c = config(ckpt, tmp)
    c.stages = "eval"
    c.eval.run = "mgsm,translation"
    with pytest.raises(EvalError, match=r"unknown eval task\(s\) \['translation'\]"):
        launch.run(c, str(tmp_path / "a"))
    c = config(ckpt, tmp)
    c.stages = "eval"
    c.eval.run = "mgsm"
    c.eval.tasks.mgsm.languages = "ar"  # MGSM has no Arabic
    with pytest.raises(EvalError, match="task mgsm: no data for language ar: .*mgsm_ar.tsv: missing"):
        launch.run(c, str(tmp_path / "b"))
    empty = tmp_path / "empty_{lang}.jsonl"
    (tmp_path / "empty_en.jsonl").write_text("\n")
    c = config(ckpt, tmp)
    c.stages = "eval"
    c.eval.run = "multiple_choice"
    c.eval.languages = "en"
    c.eval.tasks.multiple_choice.path = str(empty)
    with pytest.raises(EvalError, match="empty dataset"):
        launch.run(c, str(tmp_path / "c"))
    c = config(ckpt, tmp)
    c.stages = "eval"
    c.eval.variants = "steered"
    c.eval.steer.experts = "3,99"
    with pytest.raises(InterventionError, match="expert 99 out of range"):
        launch.run(c, str(tmp_path / "d"))
    c = config(ckpt, tmp)
    c.stages = "eval"
    c.eval.run = "perplexity"
    c.eval.tasks.perplexity.window = "sliding"
    with pytest.raises(EvalError, match=r"eval.tasks.perplexity.window = 'sliding'; choose one of truncate, rolling"):
        launch.run(c, str(tmp_path / "e"))
    c = config(ckpt, tmp)
    c.stages = "eval"
    c.eval.decode_slots = -2
    with pytest.raises(EvalError, match=r"config.eval.decode_slots = -2: must be a whole number >= 1, or 0"):
        launch.run(c, str(tmp_path / "f"))


def test_decode_slots_reach_the_generator_and_stay_out_of_the_result_key(setup, tmp_path, monkeypatch):
    import rise_jax.evaluation.tasks as tasks_module
    import rise_jax.stages.evaluate as eval_stage
    from rise_jax.content_hash import json_sha256
    from rise_jax.workdir import Workdir

    ckpt, tmp, wd = setup
    c = config(ckpt, tmp)
    c.stages, c.eval.variants, c.eval.run, c.eval.languages = "eval", "base", "mgsm", "en"
    c.eval.decode_slots = 3
    key = json_sha256(eval_stage.result_inputs(c, Workdir(wd), "base", "mgsm", "en"))
    c.eval.decode_slots = 0
    assert json_sha256(eval_stage.result_inputs(c, Workdir(wd), "base", "mgsm", "en")) == key
    seen = []

    def generator(model, params, tokenizer, prompts, *, slots, **kw):  # no decoding: the value is the point
        seen.append(slots)
        return [""] * len(prompts)

    monkeypatch.setattr(tasks_module, "generate_text_continuous", generator)
    for slots, sub in ((3, "a"), (0, "b")):
        c.eval.decode_slots = slots
        launch.run(c, str(tmp_path / sub))
    assert seen == [3, None]  # 0: the memory-bounded default (continuous.default_slots)


def test_steering_a_languages_experts_found_by_frequency_difference(setup, tmp_path):
    import json as _json

    ckpt, tmp, wd = setup
    c = config(ckpt, tmp)
    c.stages = "eval"
    c.eval.variants = "base,steered"
    c.eval.run = "perplexity"
    c.eval.languages = "en"
    c.eval.steer.language = "bn"
    c.eval.steer.tau = 0.05
    c.eval.steer.mode = "soft"
    c.eval.steer.strength = 2.0
    import shutil

    work = tmp_path / "w"
    shutil.copytree(wd, work)  # reuse routing_stats; eval records differ, so eval reruns
    launch.run(c, str(work))
    res = _json.load(open(work / "eval" / "results.json"))["results"]
    assert res["steered"]["perplexity"]["en"]["perplexity"] != res["base"]["perplexity"]["en"]["perplexity"]


def test_a_malformed_generation_config_is_named(setup, tmp_path):
    import shutil

    ckpt, tmp, _ = setup
    copy = str(tmp_path / "ck")
    shutil.copytree(ckpt, copy)
    open(os.path.join(copy, "generation_config.json"), "w").write("{ not json")
    c = config(copy, tmp)
    c.stages = "eval"
    c.eval.variants = "base"
    c.eval.run = "perplexity"
    with pytest.raises(EvalError, match=r"ck/generation_config.json: unreadable generation config"):
        launch.run(c, str(tmp_path / "wd"))


def _belebele_rows(passages):
    """Belebele's published JSONL rows (facebook/belebele: one <flores>.jsonl per language)."""
    return [
        {
            "link": "https://en.wikibooks.org/wiki/x",
            "question_number": i + 1,
            "flores_passage": passage,
            "question": "Which is true?",
            "mc_answer1": "the first",
            "mc_answer2": "the second",
            "mc_answer3": "the third",
            "mc_answer4": "the fourth",
            "correct_answer_num": str(i % 4 + 1),
            "dialect": "eng_Latn",
            "ds": "2023-05-03",
        }
        for i, passage in enumerate(passages)
    ]


def test_belebele_reads_the_published_format_and_scores_answer_letters(setup, tmp_path):
    from rise_jax.evaluation.tasks import belebele_prompt, load_belebele

    ckpt, tmp, _ = setup
    bele = tmp_path / "belebele"
    bele.mkdir()
    for flores, text in (("eng_Latn", "The cat sat."), ("ben_Beng", "বিড়াল বসেছিল।")):
        rows = _belebele_rows([text, text + " Again.", text + " Once more."])
        (bele / f"{flores}.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    items = load_belebele(str(bele), "bn")
    assert [i["answer"] for i in items] == [0, 1, 2] and items[0]["choices"][3] == "the fourth"
    prompt = belebele_prompt(items[0])
    assert prompt.startswith("Given the following passage, query, and answer choices") and "(D) the fourth" in prompt
    assert prompt.endswith("Answer:")
    c = config(ckpt, tmp)
    c.stages = "eval"
    c.eval.variants = "base"
    c.eval.run = "belebele"
    c.eval.tasks.belebele.path = str(bele)
    c.eval.max_samples = 0
    wd = str(tmp_path / "wd")
    launch.run(c, wd)
    res = json.load(open(os.path.join(wd, "eval", "results.json")))["results"]["base"]["belebele"]
    assert res["bn"]["n"] == 3 and res["en"]["n"] == 3 and 0 <= res["en"]["accuracy"] <= 100
    # A language the dataset lacks names the file and the languages it has.
    with pytest.raises(
        EvalError,
        match=r"no data for language sw \(swh_Latn\): .*swh_Latn.jsonl missing; the dataset has ben_Beng, eng_Latn",
    ):
        load_belebele(str(bele), "sw")
    (tmp_path / "bad_en.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(EvalError, match=r"bad_en.jsonl: line 1: not a Belebele item \(.*missing flores_passage"):
        load_belebele(str(tmp_path / "bad_{lang}.jsonl"), "en")


def test_steering_by_task_experts_and_its_ablations_run_as_eval_variants(setup, tmp_path):
    import shutil

    ckpt, tmp, wd0 = setup
    wd = str(tmp_path / "wd")
    shutil.copytree(wd0, wd)
    c = config(ckpt, tmp)
    c.stages = "task_experts,eval"
    c.task_experts.data.path = MGSM
    c.task_experts.data.max_samples = 4
    c.task_experts.taus = "0.0,0.2"
    c.eval.run = "perplexity"
    c.eval.variants = "base,steered"
    c.eval.steer.source = "task_experts"
    c.eval.steer.tau = 0.0
    c.eval.steer.layers = "1-2"
    c.eval.steer.mode = "soft"
    c.eval.steer.strength = 0.5
    launch.run(c, wd)
    task = json.load(open(os.path.join(wd, "analysis", "task_experts.json")))
    assert task["sweep"][0]["n_task"] > 0
    res = json.load(open(os.path.join(wd, "eval", "results.json")))["results"]
    assert res["steered"]["perplexity"]["bn"]["perplexity"] != res["base"]["perplexity"]["bn"]["perplexity"]
    for source in ("random", "multilingual"):
        c.eval.steer.source = source
        c.stages = "eval"
        launch.run(c, wd)
        assert "steered" in json.load(open(os.path.join(wd, "eval", "results.json")))["results"]
    c.eval.steer.source = "task_experts"
    c.eval.steer.tau = 0.1
    with pytest.raises(EvalError, match=r"no expert sets at tau 0.1 \(swept: 0.0, 0.2\)"):
        launch.run(c, wd)


def _jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_generative_tasks_save_every_example_and_the_results_point_to_them(setup):
    _, _, wd = setup
    res = json.load(open(os.path.join(wd, "eval", "results.json")))["results"]
    for variant in ("base", "trained", "pruned"):
        for task, metric, per_example in (("mgsm", "accuracy", "correct"), ("tydiqa", "f1", "f1")):
            for lang in ("en", "bn"):
                scores = res[variant][task][lang]
                assert scores["generations"] == f"eval/generations/{variant}/{task}/{lang}.jsonl"
                records = _jsonl(os.path.join(wd, scores["generations"]))
                assert len(records) == scores["n"]
                for r in records:
                    assert set(r) == {"id", "prompt", "output", "prediction", "reference", "score"}
                mean = sum(float(r["score"][per_example]) for r in records) / len(records)
                assert abs((100 * mean if task == "mgsm" else mean) - scores[metric]) < 1e-9
                assert sum(r["prompt"] is None for r in records) == scores["skipped"]
        assert "generations" not in res[variant]["perplexity"]["en"]  # not generative
    mgsm = _jsonl(os.path.join(wd, "eval", "generations", "base", "mgsm", "bn.jsonl"))
    from rise_jax.data.sources import SourceSpec, load_examples

    gold = load_examples(SourceSpec("mgsm", MGSM), "bn")[:2]
    assert [r["reference"] for r in mgsm] == [g.answer for g in gold]
    assert all(g.question in r["prompt"] for r, g in zip(mgsm, gold, strict=True))


def test_an_interrupted_eval_redoes_only_the_missing_language_and_its_generations(setup, tmp_path, monkeypatch):
    import shutil

    import rise_jax.stages.evaluate as eval_stage
    from rise_jax.workdir import Workdir

    ckpt, tmp, wd0 = setup
    wd = str(tmp_path / "wd")
    shutil.copytree(wd0, wd)
    path = Workdir(wd).generations("trained", "mgsm", "bn")
    before = open(path, encoding="utf-8").read()
    doc = json.load(open(os.path.join(wd, "eval", "results.json")))
    del doc["results"]["trained"]["mgsm"]["bn"]  # as if killed after writing the file, before the results
    json.dump(doc, open(os.path.join(wd, "eval", "results.json"), "w"))
    os.remove(path)
    # ... and before the stored result (.rise/results/eval/<sha256 of its inputs>.json) was written
    from rise_jax.content_hash import json_sha256

    digest = json_sha256(eval_stage.result_inputs(config(ckpt, tmp), Workdir(wd), "trained", "mgsm", "bn"))
    os.remove(os.path.join(Workdir(wd).eval_store, f"{digest}.json"))
    calls = []
    real = eval_stage.run_task

    def counting(ev, task, lang, max_samples):
        calls.append((task.kind, lang))
        return real(ev, task, lang, max_samples)

    monkeypatch.setattr(eval_stage, "run_task", counting)
    eval_stage.run(config(ckpt, tmp), Workdir(wd))
    assert calls == [("mgsm", "bn")]
    assert open(path, encoding="utf-8").read() == before  # greedy decoding: the same generations


def test_the_report_shows_saved_generations_side_by_side(setup, tmp_path):
    import shutil

    ckpt, tmp, wd0 = setup
    wd = str(tmp_path / "wd")
    shutil.copytree(wd0, wd)
    c = config(ckpt, tmp)
    c.stages = "report"
    launch.run(c, wd)
    report = open(os.path.join(wd, "report.md"), encoding="utf-8").read()
    assert "## Example generations" in report and "### mgsm / bn" in report
    assert "[trained](eval/generations/trained/mgsm/bn.jsonl)" in report
    first = _jsonl(os.path.join(wd, "eval", "generations", "base", "mgsm", "bn.jsonl"))[0]
    assert f"Example `{first['id']}`" in report and f"reference: {json.dumps(first['reference'])}" in report


def test_saved_generations_replay_as_a_text_source(setup, tmp_path):
    from rise_jax.data.sources import SourceError, SourceSpec, load_examples

    ckpt, tmp, wd0 = setup
    mgsm_dir = os.path.join(wd0, "eval", "generations", "base", "mgsm")
    saved = _jsonl(os.path.join(mgsm_dir, "bn.jsonl"))
    full = load_examples(SourceSpec("generations", mgsm_dir), "bn")
    assert [e.text for e in full] == [r["prompt"] + r["output"] for r in saved]
    prompts = load_examples(SourceSpec("generations", mgsm_dir, prompt_only=True), "ben")  # any code of it
    assert [e.text for e in prompts] == [r["prompt"] for r in saved]
    qa_dir = os.path.join(wd0, "eval", "generations", "base", "tydiqa")
    qa = _jsonl(os.path.join(qa_dir, "en.jsonl"))
    assert len(load_examples(SourceSpec("generations", qa_dir), "en")) == sum(r["prompt"] is not None for r in qa)
    with pytest.raises(SourceError, match=r"saved generations at .* has no sw .*it has: bn, en"):
        load_examples(SourceSpec("generations", mgsm_dir), "sw")
    # Through the CLI: the routing statistics of exactly what the model was evaluated on.
    c = config(ckpt, tmp)
    c.stages = "stats"
    c.data.source = "generations"
    c.data.path = mgsm_dir
    c.data.template = "raw"
    c.data.max_samples = 0
    wd = str(tmp_path / "wd")
    launch.run(c, wd)
    summary = json.load(open(os.path.join(wd, "routing_stats", "summary.json")))
    assert {lang: v["sequences"] for lang, v in summary["languages"].items()} == {"en": 2, "bn": 2}


def test_general_tasks_from_published_files_make_the_papers_table4(setup, tmp_path):
    """TriviaQA, MMLU-Medical, ARC-Challenge and HellaSwag read from their published layouts run
    as eval tasks; table.md starts with Table 4's layout (a column per task and metric, Δ rows)."""
    import shutil

    import test_eval_formats as f

    ckpt, tmp, wd0 = setup
    wd = str(tmp_path / "wd")
    shutil.copytree(wd0, wd)
    trivia = tmp_path / "verified-web-dev.json"
    trivia.write_text(json.dumps({"Data": f.TRIVIA}))
    arc = [
        {
            "id": "a1",
            "question": {
                "stem": "Which is a gas?",
                "choices": [{"text": t, "label": lab} for t, lab in zip(["ice", "steam"], "AB", strict=True)],
            },
            "answerKey": "B",
        }
    ]
    hella = [
        {
            "ind": 1,
            "activity_label": "Cooking",
            "ctx_a": "A man cuts onions.",
            "ctx_b": "he",
            "endings": ["cries.", "sings [step] loudly."],
            "label": 0,
        }
    ]
    c = config(ckpt, tmp)
    c.stages = "eval"
    c.eval.variants = "base,trained"
    c.eval.run = "triviaqa,mmlu_medical,arc_challenge,hellaswag"
    c.eval.general = c.eval.run
    c.eval.tasks.triviaqa.path = str(trivia)
    c.eval.tasks.triviaqa.max_new_tokens = 4
    c.eval.tasks.mmlu_medical.path = str(f._mmlu_dir(tmp_path))
    c.eval.tasks.arc_challenge.path = f._write_jsonl(tmp_path / "ARC-Challenge-Test.jsonl", arc)
    c.eval.tasks.hellaswag.path = f._write_jsonl(tmp_path / "hellaswag_val.jsonl", hella)
    launch.run(c, wd)
    res = json.load(open(os.path.join(wd, "eval", "results.json")))["results"]
    for variant in ("base", "trained"):
        assert set(res[variant]["triviaqa"]) == {"en"}  # English only, as published
        tq = res[variant]["triviaqa"]["en"]
        records = _jsonl(os.path.join(wd, tq["generations"]))
        assert [r["reference"][0] for r in records] == ["Sunset Boulevard", "David Seville"]
        assert "Question: " + f.TRIVIA[0]["Question"] + "\nAnswer:" in records[0]["prompt"]
        assert tq["exact_match"] == sum(r["score"]["exact_match"] for r in records) / 2
        assert res[variant]["mmlu_medical"]["en"]["n"] == 2  # max_samples
        assert res[variant]["arc_challenge"]["en"]["n"] == 1 and res[variant]["hellaswag"]["en"]["n"] == 1
    table = open(os.path.join(wd, "eval", "table.md")).read()
    assert table.startswith("### General ability (paper Table 4)")
    header = next(line for line in table.splitlines() if line.startswith("| setting"))
    assert header.split("|")[2:-1] == [
        " triviaqa EM ",
        " triviaqa F1 ",
        " mmlu_medical acc ",
        " mmlu_medical acc_norm ",
        " arc_challenge acc ",
        " arc_challenge acc_norm ",
        " hellaswag acc ",
        " hellaswag acc_norm ",
    ]
    assert sum(line.startswith(("| base ", "| trained ", "| Δ trained ")) for line in table.splitlines()) >= 3
    c.eval.general = "mmlu_medicl"
    with pytest.raises(EvalError, match=r"config.eval.general: unknown task\(s\) \['mmlu_medicl'\]"):
        launch.run(c, wd)


def test_table_md_puts_every_task_on_one_table_then_each_tasks_further_metrics():
    """Without a model: results of PolyMath, translation and XNLI on different languages give
    one task × language × variant table (primary metrics, Δ rows over shared languages), then
    each task's table and its kind's further metrics (PolyMath's levels, translation's BLEU)."""
    from rise_jax.configs import base
    from rise_jax.stages.evaluate import results_markdown

    e = base.get_base_config().eval

    def scores(value, **extra):
        return {"n": 4, "skipped": 0, "truncated": 0, **extra, "_": value}

    results = {
        variant: {
            "polymath": {
                lang: scores(0, dw_accuracy=10.0 + d, accuracy=20.0, **{f"accuracy_{lv}": 5.0 + d for lv in LEVELS})
                for lang in ("sw", "zh")
            },
            "flores_en_xx": {"sw": scores(0, chrf=30.0 + d, bleu=8.0 + d)},
            "xnli": {"sw": scores(0, accuracy=40.0 + d), "ar": scores(0, accuracy=35.0)},
        }
        for variant, d in (("base", 0.0), ("trained", 1.5))
    }
    table = results_markdown(results, e)
    lines = table.splitlines()
    assert lines[0] == "### Every task by language (primary metrics)"
    assert lines[2] == "| task | setting | sw | zh | ar | mean |"
    assert "| polymath dw_accuracy | Δ trained | +1.50 | +1.50 | – | +1.50 |" in lines
    assert "| flores_en_xx chrf | base | 30.00 | – | – | 30.00 |" in lines
    assert "| xnli accuracy | Δ trained | +1.50 | – | +0.00 | +0.75 |" in lines
    for heading in ("### polymath: dw_accuracy", "#### polymath: accuracy_top", "#### flores_en_xx: bleu"):
        assert heading in lines, heading
    assert "#### xnli" not in table  # multiple choice has no further metrics here
