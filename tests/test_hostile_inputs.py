"""Hostile inputs: what cannot be right is refused before any work, as one line naming the culprit.

Two tables. ``CLI_CASES`` run the command line in this process (``rise_jax.launch.cli``) on a tiny
config file written here (the shared tiny pipeline: every stage from stats to eval requested):
each must exit with status 2 and print one ``error:`` line holding the expected text, and leave
no artefact behind (or, where a stage reads a damaged artefact placed in the workdir, leave that
artefact as it was). Most fail in validation, before any model is built or stage runs.
``API_CASES`` call the library directly. The complementary config checks of
``tests/test_launch.py`` (unknown stages / fields / dtypes / methods, bad numbers) are not repeated.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest
from fixture_data import FLORES, TINY_TOKENIZER, TINY_VOCAB
from hf_reference import make_hf_model, save_hf_model

TESTS = os.path.dirname(os.path.abspath(__file__))
STAGE_OUTPUTS = ("routing_stats", "analysis", "task_routing", "selection.json", "train", "export", "eval")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny Qwen3-MoE whose vocabulary covers the tiny tokenizer (4 MoE layers, 8 experts, top-2)."""
    model = make_hf_model("qwen3_moe", seed=3, vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=4)
    return save_hf_model(model, str(tmp_path_factory.mktemp("hostile_ckpt")))


CONFIG_TEMPLATE = """
import sys
sys.path.insert(0, {tests!r})
from tiny_pipeline import tiny_config


def get_config():
    c = tiny_config({ckpt!r})
    c.stages = "stats,analyze,select,train,export,eval"
    c.eval.run = "perplexity"
    c.eval.languages = "en,bn,sw"
    c.eval.tasks.perplexity.path = {flores!r}
    c.eval.tasks.perplexity.split = "dev"
    return c
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, ckpt):
    path = tmp_path_factory.mktemp("hostile_config") / "tiny.py"
    path.write_text(CONFIG_TEMPLATE.format(tests=TESTS, ckpt=ckpt, flores=FLORES))
    return str(path)


def cli(capsys, *args) -> tuple[int, list[str]]:
    """``python -m rise_jax.launch ARGS`` in this process: (exit status, the lines of stderr)."""
    from rise_jax.launch import cli as launch_cli

    try:
        launch_cli(["rise_jax.launch", *args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err.splitlines()


# -- what the rows set up in their temporary directory (``tmp``) ----------------------------------


def _text_files(directory, lines: dict[str, int]) -> None:
    os.makedirs(directory, exist_ok=True)
    for code, n in lines.items():
        with open(os.path.join(directory, f"{code}.txt"), "w", encoding="utf-8") as fh:
            fh.write("".join(f"sentence {i} in {code}\n" for i in range(n)))


def _uneven_text(tmp, ckpt):
    _text_files(tmp / "text", {"en": 5, "bn": 4, "sw": 5})


def _uneven_flores(tmp, ckpt):
    for d in ("eng_Latn", "ben_Beng", "swh_Latn"):
        shutil.copytree(os.path.join(FLORES, d), tmp / "flores" / d)
    rows = (tmp / "flores" / "swh_Latn" / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp / "flores" / "swh_Latn" / "dev.tsv").write_text("".join(rows[:-7]), encoding="utf-8")


def _fifo_text(tmp, ckpt):
    _text_files(tmp / "text", {"bn": 3, "sw": 3})
    os.mkfifo(tmp / "text" / "en.txt")  # never opened: reading it would block forever


def _empty_dir(tmp, ckpt):
    (tmp / "empty").mkdir()


def _tokenizer_copy(tmp, **replace: str):
    shutil.copytree(TINY_TOKENIZER, tmp / "tok")
    for name, text in replace.items():
        (tmp / "tok" / f"{name}.json").write_text(text, encoding="utf-8")


def _bad_tokenizer_json(tmp, ckpt):
    _tokenizer_copy(tmp, tokenizer='{"version": "1.0", "model": {')


def _empty_tokenizer_json(tmp, ckpt):
    _tokenizer_copy(tmp, tokenizer="{}")


def _bad_tokenizer_config(tmp, ckpt):
    _tokenizer_copy(tmp, tokenizer_config="{'eos_token': '<|im_end|>'")


def _list_tokenizer_config(tmp, ckpt):
    _tokenizer_copy(tmp, tokenizer_config="[]")


def _checkpoint_config(tmp, ckpt, text: str):
    shutil.copytree(ckpt, tmp / "ckpt")
    (tmp / "ckpt" / "config.json").write_text(text, encoding="utf-8")


def _corrupt_checkpoint_config(tmp, ckpt):
    _checkpoint_config(tmp, ckpt, '{"model_type": "qwen3_moe", ')


def _negative_vocab(tmp, ckpt):
    cfg = json.loads(open(os.path.join(ckpt, "config.json")).read())
    _checkpoint_config(tmp, ckpt, json.dumps({**cfg, "vocab_size": -5}))


def _selection(**change) -> dict:
    listed = change.pop("experts", ())
    experts = [{"layer": layer, "expert": e, "zone": z, "scores": {}} for layer, e, z in listed or ()]
    doc = {
        "method": "rise",
        "params": {"k": 4},
        "model": {"model_type": "qwen3_moe", "num_moe_layers": 4, "num_experts": 8, "top_k": 2},
        "target_language": "bn",
        "languages": ["en", "bn", "sw"],
        "num_selected": len(experts),
        "experts": experts if listed is not None else None,
        "interference": {},
        "stats": "routing_stats",
    }
    doc.update(change)
    return {k: v for k, v in doc.items() if v is not None}


def _workdir_file(relpath: str, content):
    def setup(tmp, ckpt):
        path = tmp / "wd" / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")

    return setup


def _stats_npz(tmp, drop: str = ""):
    arrays = {
        "languages": np.asarray(["en", "bn", "sw"]),
        "counts": np.ones((3, 4, 8), np.int64),
        "tokens": np.full((3,), 16, np.int64),
        "weight_mass": np.ones((3, 4, 8)),
        "prob_mass": np.ones((3, 4, 8)),
        "entropy_sum": np.ones((3, 4)),
    }
    arrays.pop(drop, None)
    (tmp / "wd" / "routing_stats").mkdir(parents=True, exist_ok=True)
    np.savez(tmp / "wd" / "routing_stats" / "stats.npz", **arrays)


def _stats_with_summary(summary):
    def setup(tmp, ckpt):
        _stats_npz(tmp)
        _workdir_file("routing_stats/summary.json", summary)(tmp, ckpt)

    return setup


def _stats_without(key: str):
    def setup(tmp, ckpt):
        _stats_npz(tmp, drop=key)
        _workdir_file("routing_stats/summary.json", _SUMMARY)(tmp, ckpt)

    return setup


_SUMMARY = {"model": {"model_type": "qwen3_moe", "num_moe_layers": 4, "num_experts": 8, "top_k": 2}, "languages": {}}
_ONE_EXPERT = [(0, 1, "shallow")]
STEERED = "--config.eval.variants=base,steered"


def case(name, args, message, setup=None):
    return pytest.param(args, message, setup, id=name)


CLI_CASES = [
    # tokenizer against the model, and damaged tokenizer / model files
    case(
        "tokenizer_ids_exceed_model_vocab",
        ["--config.model.checkpoint={qwen}"],
        "produces ids up to 1023 (1024 tokens), but the model has vocab_size = 128 ({qwen}/config.json)",
    ),
    case("checkpoint_without_tokenizer", ["--config.model.tokenizer="], "{ckpt}: no tokenizer.json"),
    case(
        "tokenizer_dir_missing",
        ["--config.model.tokenizer={tmp}/no_tokenizer"],
        "config.model.tokenizer = '{tmp}/no_tokenizer': no such directory",
    ),
    case(
        "tokenizer_json_corrupt",
        ["--config.model.tokenizer={tmp}/tok"],
        "{tmp}/tok/tokenizer.json: unreadable tokenizer",
        _bad_tokenizer_json,
    ),
    case(
        "tokenizer_json_not_a_tokenizer",
        ["--config.model.tokenizer={tmp}/tok"],
        "{tmp}/tok/tokenizer.json: unreadable tokenizer",
        _empty_tokenizer_json,
    ),
    case(
        "tokenizer_config_corrupt",
        ["--config.model.tokenizer={tmp}/tok"],
        "{tmp}/tok/tokenizer_config.json: unreadable tokenizer config",
        _bad_tokenizer_config,
    ),
    case(
        "tokenizer_config_not_an_object",
        ["--config.model.tokenizer={tmp}/tok"],
        "{tmp}/tok/tokenizer_config.json: unreadable tokenizer config: expected a JSON object",
        _list_tokenizer_config,
    ),
    case(
        "checkpoint_config_corrupt",
        ["--config.model.checkpoint={tmp}/ckpt"],
        "{tmp}/ckpt/config.json: unreadable model config",
        _corrupt_checkpoint_config,
    ),
    case(
        "checkpoint_vocab_negative",
        ["--config.model.checkpoint={tmp}/ckpt"],
        "{tmp}/ckpt/config.json: vocab_size = -5 is not a positive whole number",
        _negative_vocab,
    ),
    # replay text
    case(
        "parallel_text_of_unequal_lengths",
        ["--config.data.source=plain_text", "--config.data.path={tmp}/text", "--config.data.parallel=True"],
        "config.data.parallel: the plain_text files are not line-aligned",
        _uneven_text,
    ),
    case(
        "parallel_text_names_files_and_counts",
        ["--config.data.source=plain_text", "--config.data.path={tmp}/text", "--config.data.parallel=True"],
        "{tmp}/text/en.txt 5, {tmp}/text/bn.txt 4, {tmp}/text/sw.txt 5",
        _uneven_text,
    ),
    case(
        "flores_rows_differ",
        ["--config.data.path={tmp}/flores"],
        "{tmp}/flores/swh_Latn/dev.tsv 92",
        _uneven_flores,
    ),
    case(
        "traditional_chinese_is_not_simplified",
        ["--config.data.languages=en,bn,zh-TW"],
        "FLoRes-200 at {flores} has no zh-Hant (Chinese (Traditional))",
    ),
    case(
        "fifo_as_a_language_file",
        ["--config.data.source=plain_text", "--config.data.path={tmp}/text"],
        "{tmp}/text/en.txt: a FIFO, not a regular file",
        _fifo_text,
    ),
    case("data_path_root", ["--config.data.path=/"], "/: no FLoRes-200 files in this directory"),
    case("data_path_empty", ["--config.data.path="], "config.data.path is empty"),
    case(
        "data_dir_without_text",
        ["--config.data.source=plain_text", "--config.data.path={tmp}/empty"],
        "{tmp}/empty: no plain text files in this directory",
        _empty_dir,
    ),
    case("data_languages_empty", ["--config.data.languages="], "config.data.languages: no language given"),
    case("data_languages_unknown", ["--config.data.languages=en,xx"], "config.data.languages: unknown language 'xx'"),
    case(
        "data_languages_twice",
        ["--config.data.languages=en,bn,ben_Beng"],
        "config.data.languages: language(s) listed twice: bn",
    ),
    case("data_language_absent", ["--config.data.languages=en,bn,am"], "has no am (Amharic)"),
    case("data_source_unknown", ["--config.data.source=magic"], "unknown source kind 'magic'"),
    case("train_language_absent", ["--config.train.language=am"], "has no am (Amharic)"),
    case("train_data_root", ["--config.train.data.path=/"], "/: no FLoRes-200 files in this directory"),
    case(
        "train_language_unknown",
        ["--config.train.language=xyzzy"],
        "config.train.language = 'xyzzy': unknown language",
    ),
    # selection and analysis settings
    case(
        "select_target_not_replayed",
        ["--config.select.target=de"],
        "config.select.target = 'de': language 'de' is not in the routing statistics (config.data.languages: en, bn, sw)",
    ),
    case("select_target_unknown", ["--config.select.target=xx"], "config.select.target = 'xx': unknown language"),
    case("select_target_empty", ["--config.select.target="], "config.select.target is empty"),
    case(
        "analyze_reference_not_replayed",
        ["--config.analyze.reference=de"],
        "config.analyze.reference = 'de' is not among config.data.languages",
    ),
    case("analyze_layer_top_n_negative", ["--config.analyze.layer_top_n=-1"], "config.analyze.layer_top_n = -1"),
    case(
        "analyze_low_resource_unknown",
        ["--config.analyze.low_resource=bn,xx"],
        "config.analyze.low_resource: unknown language 'xx'",
    ),
    case(
        "task_experts_language_unknown",
        ["--config.stages=task_experts", "--config.task_experts.language=xx"],
        "config.task_experts.language = 'xx'",
    ),
    case(
        "task_experts_corpus_missing",
        ["--config.stages=task_experts", "--config.task_experts.data.path={tmp}/nowhere"],
        "{tmp}/nowhere/mgsm_en.tsv: missing",
    ),
    # evaluation
    case(
        "eval_languages_empty",
        ["--config.eval.languages="],
        "config.eval.tasks.perplexity.languages and config.eval.languages are both empty",
    ),
    case(
        "eval_task_languages_unknown",
        ["--config.eval.tasks.perplexity.languages=xx"],
        "config.eval.tasks.perplexity.languages: unknown language 'xx'",
    ),
    case("eval_run_empty", ["--config.eval.run="], "no eval task(s) given"),
    case("eval_variants_empty", ["--config.eval.variants="], "config.eval.variants is empty"),
    case("eval_baseline_unknown", ["--config.eval.baseline=best"], "config.eval.baseline = 'best'"),
    case("eval_language_without_data", ["--config.eval.tasks.perplexity.languages=am"], "has no am (Amharic)"),
    case(
        "eval_perplexity_source_unknown",
        ["--config.eval.tasks.perplexity.source=magic"],
        "config.eval.tasks.perplexity.source = 'magic'",
    ),
    case("steer_source", [STEERED, "--config.eval.steer.source=magic"], "config.eval.steer.source = 'magic'"),
    case("steer_mode", [STEERED, "--config.eval.steer.mode=loud"], "config.eval.steer.mode = 'loud'"),
    case(
        "steer_strength_nan",
        [STEERED, "--config.eval.steer.experts=1", "--config.eval.steer.strength=nan"],
        "config.eval.steer.strength = nan: must be a finite number",
    ),
    case("steer_tau", [STEERED, "--config.eval.steer.tau=1.5"], "config.eval.steer.tau = 1.5"),
    case(
        "steer_layers_not_indices",
        [STEERED, "--config.eval.steer.experts=1", "--config.eval.steer.layers=a-b"],
        "config.eval.steer.layers = 'a-b'",
    ),
    case(
        "steer_layers_reversed",
        [STEERED, "--config.eval.steer.experts=1", "--config.eval.steer.layers=3-1"],
        "config.eval.steer.layers = '3-1': expected non-empty ranges",
    ),
    case(
        "steer_layers_out_of_range",
        [STEERED, "--config.eval.steer.experts=1", "--config.eval.steer.layers=0-9"],
        "config.eval.steer.layers = '0-9': MoE layer 9 out of range [0, 4) ({ckpt})",
    ),
    case(
        "steer_experts_out_of_range",
        [STEERED, "--config.eval.steer.experts=3,99"],
        "config.eval.steer.experts = '3,99': expert 99 out of range [0, 8)",
    ),
    case("steer_experts_empty", [STEERED], "config.eval.steer.experts is empty"),
    case(
        "steer_hard_beyond_top_k",
        [STEERED, "--config.eval.steer.experts=0,1,2", "--config.eval.steer.mode=hard"],
        "hard steering of 3 experts exceeds top-k = 2",
    ),
    case(
        "steer_language_not_replayed",
        [STEERED, "--config.eval.steer.source=language", "--config.eval.steer.language=de"],
        "config.eval.steer.language = 'de' is not among config.data.languages",
    ),
    case(
        "steer_language_unknown",
        [STEERED, "--config.eval.steer.language=xx"],
        "config.eval.steer.language = 'xx': unknown language",
    ),
    case(
        "steer_tau_not_swept",
        [STEERED, "--config.eval.steer.source=task_experts", "--config.eval.steer.tau=0.15"],
        "config.eval.steer.tau: no expert sets at tau 0.15 (swept: 0.05, 0.1, 0.2, 0.3, 0.4, 0.5)",
    ),
    # devices
    case("mesh_data_zero", ["--config.mesh.data=0"], "config.mesh.data = 0: must be a whole number >= 1"),
    case("mesh_model_negative", ["--config.mesh.model=-1"], "config.mesh.model = -1: must be a whole number >= 0"),
    case(
        "mesh_more_devices_than_visible",
        [f"--config.mesh.model={jax.device_count() + 1}"],
        f"config.mesh: data x model = 1 x {jax.device_count() + 1}",
    ),
    # workdir
    case("workdir_empty", ["--workdir="], "workdir"),
    # damaged artefacts of earlier stages (the stage reading them refuses; they are left as they are)
    case(
        "selection_not_json",
        ["--config.stages=train"],
        "{tmp}/wd/selection.json: unreadable selection",
        _workdir_file("selection.json", '{"method": "rise", '),
    ),
    case(
        "selection_not_an_object",
        ["--config.stages=train"],
        "{tmp}/wd/selection.json: not a selection artefact (expected a JSON object)",
        _workdir_file("selection.json", []),
    ),
    case(
        "selection_missing_experts",
        ["--config.stages=train"],
        "{tmp}/wd/selection.json: not a selection artefact (no 'experts')",
        _workdir_file("selection.json", _selection(experts=None)),
    ),
    case(
        "selection_claims_more_experts_than_it_lists",
        ["--config.stages=train"],
        "{tmp}/wd/selection.json: num_selected = 4, but 'experts' lists 1",
        _workdir_file("selection.json", _selection(experts=_ONE_EXPERT, num_selected=4)),
    ),
    case(
        "selection_expert_without_layer",
        ["--config.stages=train"],
        "{tmp}/wd/selection.json: experts[0] = {'expert': 3}",
        _workdir_file("selection.json", _selection(experts=[], num_selected=1) | {"experts": [{"expert": 3}]}),
    ),
    case(
        "selection_model_without_top_k",
        ["--config.stages=train"],
        "{tmp}/wd/selection.json: model.top_k = None",
        _workdir_file("selection.json", _selection(model={"num_moe_layers": 4, "num_experts": 8})),
    ),
    case(
        "selection_zone_count_inconsistent",
        ["--config.stages=train"],
        "{tmp}/wd/selection.json: zones.shallow.count = 2, but 'experts' lists 1 in zone shallow",
        _workdir_file("selection.json", _selection(experts=_ONE_EXPERT, zones={"shallow": {"count": 2}})),
    ),
    case(
        "routing_summary_not_json",
        ["--config.stages=select"],
        "{tmp}/wd/routing_stats/summary.json: unreadable routing statistics summary",
        _stats_with_summary('{"model": '),
    ),
    case(
        "routing_summary_not_an_object",
        ["--config.stages=select"],
        "{tmp}/wd/routing_stats/summary.json: unreadable routing statistics summary: expected a JSON object",
        _stats_with_summary([1, 2]),
    ),
    case(
        "routing_summary_without_model",
        ["--config.stages=select"],
        "{tmp}/wd/routing_stats/summary.json: no 'model' object",
        _stats_with_summary({"languages": {}}),
    ),
    case(
        "routing_arrays_not_npz",
        ["--config.stages=select"],
        "{tmp}/wd/routing_stats/stats.npz: unreadable routing statistics",
        lambda tmp, ckpt: (
            _workdir_file("routing_stats/stats.npz", b"PK\x03\x04 not really a zip")(tmp, ckpt),
            _workdir_file("routing_stats/summary.json", _SUMMARY)(tmp, ckpt),
        ),
    ),
    case(
        "routing_arrays_without_counts",
        ["--config.stages=select"],
        "{tmp}/wd/routing_stats/stats.npz: no 'counts' array",
        _stats_without("counts"),
    ),
    # config files (launch.py)
    case(
        "config_file_without_get_config",
        ["--config={tmp}/cfg.py"],
        "no get_config",
        lambda tmp, ckpt: (tmp / "cfg.py").write_text("x = 1\n"),
    ),
    case(
        "config_file_raising_on_import",
        ["--config={tmp}/cfg.py"],
        "{tmp}/cfg.py: raises on import: ZeroDivisionError",
        lambda tmp, ckpt: (tmp / "cfg.py").write_text("1 / 0\n"),
    ),
    case(
        "config_file_not_parsing",
        ["--config={tmp}/cfg.py"],
        "{tmp}/cfg.py: does not parse",
        lambda tmp, ckpt: (tmp / "cfg.py").write_text("def get_config(:\n"),
    ),
    case(
        "config_file_returning_a_dict",
        ["--config={tmp}/cfg.py"],
        "get_config() returned a dict, not an ml_collections.ConfigDict",
        lambda tmp, ckpt: (tmp / "cfg.py").write_text("def get_config():\n    return {'model': {}}\n"),
    ),
]


def _snapshot(root) -> dict[str, bytes]:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            path = os.path.join(d, f)
            if not os.path.islink(path) and os.path.isfile(path):
                out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


@pytest.mark.parametrize("args,message,setup", CLI_CASES)
def test_the_command_line_refuses_with_one_line(tmp_path, capsys, ckpt, qwen_dir, config_file, args, message, setup):
    if setup is not None:
        setup(tmp_path, ckpt)
    placed = _snapshot(tmp_path / "wd")
    fill = {"{tmp}": str(tmp_path), "{ckpt}": ckpt, "{qwen}": qwen_dir, "{flores}": FLORES}
    given = [_fill(a, fill) for a in args]
    base = [f"--config={config_file}", f"--workdir={tmp_path / 'wd'}"]  # unless the row gives its own
    argv = [b for b in base if not any(a.startswith(b.split("=")[0] + "=") for a in given)] + given
    code, err = cli(capsys, *argv)
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err
    assert _fill(message, fill) in errors[0]
    assert "Traceback" not in "\n".join(err)
    after = _snapshot(tmp_path / "wd")
    made = sorted({f.split(os.sep)[0] for f in after if f not in placed} & set(STAGE_OUTPUTS))
    assert not made, f"artefacts written before the refusal: {made}"
    assert {k: after.get(k) for k in placed} == placed  # what was placed is left as it was


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def test_the_tiny_config_itself_is_valid(config_file, ckpt):
    """The rows above fail for their own reason: the config they start from passes validation."""
    from rise_jax import launch

    config = launch.load_config_file(config_file) if hasattr(launch, "load_config_file") else None
    if config is None:
        sys.path.insert(0, TESTS)
        from tiny_pipeline import tiny_config

        config = tiny_config(ckpt)
    config.eval.run = "perplexity"
    config.eval.languages = "en,bn,sw"
    config.eval.tasks.perplexity.path = FLORES
    config.eval.tasks.perplexity.split = "dev"
    config.stages = "stats,analyze,select,train,export,eval"
    launch.validate_config(config)


# -- the API -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_params(ckpt):
    import rise_jax

    return rise_jax.load_model(ckpt, dtype="float32", progress=False)


def _forward_with(ids):
    def call(tmp, ckpt, model_and_params):
        import rise_jax

        model, params = model_and_params
        rise_jax.forward(model, params, ids)

    return call


def _load_tokenizer(setup):
    def call(tmp, ckpt, model_and_params):
        from rise_jax.tokenizer import load_tokenizer

        setup(tmp, ckpt)
        load_tokenizer(str(tmp / "tok"))

    return call


def _load_selection(doc):
    def call(tmp, ckpt, model_and_params):
        from rise_jax.selection.artefact import load_selection

        (tmp / "selection.json").write_text(json.dumps(doc))
        load_selection(str(tmp / "selection.json"), model_and_params[0].cfg)

    return call


def _load_stats(summary):
    def call(tmp, ckpt, model_and_params):
        from rise_jax.routing.stats import RoutingStats

        _stats_with_summary(summary)(tmp, ckpt)
        RoutingStats.load(str(tmp / "wd" / "routing_stats"))

    return call


def _source(kind, path_in_tmp, language, setup, parallel=False):
    def call(tmp, ckpt, model_and_params):
        from rise_jax.data.sources import SourceSpec, check_source, load_examples

        setup(tmp, ckpt)
        spec = SourceSpec(kind, str(tmp / path_in_tmp))
        if parallel:
            check_source(spec, ["en", "bn", "sw"], "config.data", parallel=True)
        else:
            load_examples(spec, language)

    return call


def _fits(tmp, ckpt, model_and_params):
    from rise_jax.tokenizer import check_fits_model

    tiny = str(tmp / "tiny128")
    shutil.copytree(ckpt, tiny)
    cfg = json.loads(open(os.path.join(tiny, "config.json")).read())
    (tmp / "tiny128" / "config.json").write_text(json.dumps({**cfg, "vocab_size": 1000}))
    check_fits_model(TINY_TOKENIZER, tiny)


API_CASES = [
    pytest.param(
        _forward_with(np.array([[1, 2, TINY_VOCAB, 3]])), "token id 1024 at position (0, 2)", id="forward_id_past_vocab"
    ),
    pytest.param(_forward_with(np.array([[1, -1]])), "token id -1 at position (0, 1)", id="forward_negative_id"),
    pytest.param(_forward_with(np.array([[1.0, 2.5]])), "token ids must be integers", id="forward_float_ids"),
    pytest.param(_load_tokenizer(_bad_tokenizer_json), "tok/tokenizer.json: unreadable tokenizer", id="tokenizer_json"),
    pytest.param(_load_tokenizer(_bad_tokenizer_config), "tok/tokenizer_config.json", id="tokenizer_config"),
    pytest.param(
        _load_selection(_selection(experts=_ONE_EXPERT, num_selected=4)),
        "selection.json: num_selected = 4, but 'experts' lists 1",
        id="selection_inconsistent",
    ),
    pytest.param(
        _load_selection(_selection(experts=[(0, 1, "shallow"), (0, 1, "shallow")])),
        "(layer 0, expert 1) is listed twice",
        id="selection_duplicate_expert",
    ),
    pytest.param(_load_stats("not json"), "summary.json: unreadable routing statistics summary", id="stats_summary"),
    pytest.param(
        _source("plain_text", "text", "en", _fifo_text), "en.txt: a FIFO, not a regular file", id="source_fifo"
    ),
    pytest.param(
        _source("plain_text", "text", "en", _uneven_text, parallel=True),
        "bn.txt 4",
        id="source_parallel_counts",
    ),
    pytest.param(_fits, "ids up to 1023 (1024 tokens), but the model has vocab_size = 1000", id="tokenizer_vs_vocab"),
]


@pytest.mark.parametrize("call,message", API_CASES)
def test_the_api_refuses_with_one_line(tmp_path, ckpt, model_and_params, call, message):
    from rise_jax.errors import RiseError

    with pytest.raises(RiseError) as info:
        call(tmp_path, ckpt, model_and_params)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_forward_accepts_every_id_of_the_vocabulary_and_skips_traced_values(model_and_params):
    """The check passes ids in range (no model call needed) and never looks inside a jit."""
    from rise_jax.api import check_token_ids

    model, _ = model_and_params
    check_token_ids(np.array([[0, TINY_VOCAB - 1]]), model.cfg.vocab_size)
    jax.make_jaxpr(lambda ids: check_token_ids(ids, model.cfg.vocab_size) or ids)(np.array([[TINY_VOCAB + 5]]))
