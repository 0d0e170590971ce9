"""The train and export stages, training data preparation, and their clear errors."""

import json
import os

import numpy as np
import pytest
from fixture_data import FLORES, QWEN_TOKENIZER, TINY_VOCAB
from hf_reference import make_hf_model, save_hf_model
from tiny_pipeline import tiny_config as config

import rise_jax
from rise_jax import launch
from rise_jax.data.sources import Example
from rise_jax.selection.algorithms import SelectionError
from rise_jax.training.data import TrainingDataError, build_training_set


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = make_hf_model("qwen3_moe", seed=9, vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=4)
    return save_hf_model(model, str(tmp_path_factory.mktemp("ck")))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ckpt):
    wd = str(tmp_path_factory.mktemp("wd"))
    c = config(ckpt)
    c.stages = "stats,select,train,export"
    launch.run(c, wd)
    return wd


def test_train_and_export_stages_write_their_artefacts(trained, ckpt):
    summary = json.load(open(os.path.join(trained, "train", "summary.json")))
    assert summary["status"] == "completed" and summary["language"] == "bn"
    assert (
        summary["truncated"] > 0
        and summary["held_out_sequences"] == 1
        and summary["trainable_parameters"] == 4 * 3 * 32 * 16
    )
    assert sorted(os.listdir(os.path.join(trained, "train"))) == [
        "checkpoints", "experts", "metrics.jsonl", "selection.json", "summary.json", "tensorboard", "train_config.json",
    ]  # fmt: skip
    held = [json.loads(x) for x in open(os.path.join(trained, "train", "metrics.jsonl")) if "held_out_loss" in x]
    assert held and np.isfinite(held[-1]["held_out_loss"])
    exported = os.path.join(trained, "export", "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(exported))
    model, params = rise_jax.load_model(exported, dtype="float32", progress=False)  # loads back
    _, base_params = rise_jax.load_model(ckpt, dtype="float32", progress=False)
    sel = json.load(open(os.path.join(trained, "selection.json")))
    layer, e = sel["experts"][0]["layer"], sel["experts"][0]["expert"]
    a = np.asarray(params["layers"]["moe"]["experts"]["up_proj"][layer, e])
    b = np.asarray(base_params["layers"]["moe"]["experts"]["up_proj"][layer, e])
    assert not np.array_equal(a, b)


def test_rerunning_train_resumes_from_its_checkpoint(trained, ckpt):
    from rise_jax.workdir import Workdir

    c = config(ckpt)
    c.stages = "train"
    # As if the process died after its last checkpoint: the pipeline record still says running.
    path = Workdir(trained).record("train")
    record = json.load(open(path))
    json.dump({**record, "status": "running"}, open(path, "w"))
    launch.run(c, trained)  # the final checkpoint is found: no step is recomputed
    summary = json.load(open(os.path.join(trained, "train", "summary.json")))
    assert summary["status"] == "completed" and summary["final_loss"] is None and summary["steps_done"] == 6


def test_selection_from_another_model_shape_is_refused(tmp_path, trained):
    other = save_hf_model(
        make_hf_model("qwen3_moe", seed=1, num_experts=16, vocab_size=TINY_VOCAB), str(tmp_path / "o")
    )
    wd = tmp_path / "wd"
    wd.mkdir()
    import shutil

    shutil.copy(os.path.join(trained, "selection.json"), wd / "selection.json")
    c = config(other)
    c.stages = "train"
    with pytest.raises(SelectionError, match=r"selection made for .* = \(4, 8, 2\), but the model has \(3, 16, 2\)"):
        launch.run(c, str(wd))


def test_empty_training_data_is_a_clear_error(tmp_path):
    tok = rise_jax.load_tokenizer(QWEN_TOKENIZER)
    with pytest.raises(TrainingDataError, match="no training examples"):
        build_training_set([], tok, 32)
    with pytest.raises(TrainingDataError, match="no usable training sequences"):
        build_training_set([Example("0", "a")], tok, 32)
    with pytest.raises(TrainingDataError, match="completion-only training needs QA/MGSM data"):
        build_training_set([Example("0", "some text")], tok, 32, completion_only=True)


def test_long_sequences_are_truncated_and_counted_and_completion_masks_the_prompt():
    tok = rise_jax.load_tokenizer(QWEN_TOKENIZER)
    long = Example("0", "word " * 100)
    data = build_training_set([long, Example("1", "short text here")], tok, max_length=16)
    assert data.truncated == 1 and max(len(s) for s in data.ids) == 16
    qa = Example("q", "Context here\nWhat?", prompt="Context here\nWhat?", answer="forty two")
    d = build_training_set([qa], tok, 64, completion_only=True)
    ids, mask = d.ids[0], d.loss_masks[0]
    assert tok.decode(ids[mask == 1]) == "forty two"
    assert tok.decode(ids[mask == 0]) == "Context here\nWhat?\n"


def test_unwritable_workdir_is_a_clear_error(tmp_path, ckpt):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    c = config(ckpt)
    c.stages = "train"
    with pytest.raises(OSError, match="cannot be created"):
        launch.run(c, str(blocker / "wd"))


# --- Nothing lost, nothing stale (the pipeline's guarantees on a finished workdir) ---------------


@pytest.fixture
def finished(tmp_path, trained):
    """A private copy of the finished stats/select/train/export workdir."""
    import shutil

    wd = str(tmp_path / "wd")
    shutil.copytree(trained, wd)
    return wd


def _train_files(wd):
    return {
        name: os.path.exists(os.path.join(wd, "train", name)) for name in ("experts", "checkpoints", "summary.json")
    }


def test_a_rejected_setting_is_refused_before_anything_is_deleted(finished, ckpt):
    from rise_jax.errors import SettingError

    c = config(ckpt)
    c.stages = "train"
    c.train.batch_size = 0
    with pytest.raises(SettingError, match=r"config.train.batch_size = 0: must be a whole number >= 1"):
        launch.run(c, finished)
    assert all(_train_files(finished).values())


def test_a_rerun_that_fails_before_writing_anything_puts_the_old_results_back(finished, ckpt):
    from rise_jax.data.sources import SourceError

    before = json.load(open(os.path.join(finished, ".rise", "train.json")))
    c = config(ckpt)
    c.stages = "train"
    c.train.data.path = "/no/such/flores"  # a typo: the fingerprint changes, the data cannot load
    with pytest.raises(SourceError, match="/no/such/flores"):
        launch.run(c, finished)
    assert all(_train_files(finished).values())
    assert json.load(open(os.path.join(finished, ".rise", "train.json"))) == before
    c = config(ckpt)
    c.stages = "train"
    assert launch.run(c, finished) == {"train": "skipped"}  # the original run is intact and current


def test_max_steps_is_resumable_and_a_rerun_does_not_creep_on(finished, ckpt):
    from rise_jax.pipeline import PipelineError

    c = config(ckpt)
    c.stages = "train"
    c.train.lr = 2e-3  # a new run
    c.train.max_steps = 1
    for _ in range(2):  # the same command twice: still one step
        with pytest.raises(PipelineError, match="stopped at max_steps"):
            launch.run(c, finished)
        assert json.load(open(os.path.join(finished, "train", "summary.json")))["steps_done"] == 1
    c.train.max_steps = 0  # lifting the limit resumes from step 1
    assert launch.run(c, finished) == {"train": "ran"}
    summary = json.load(open(os.path.join(finished, "train", "summary.json")))
    entries = [json.loads(x) for x in open(os.path.join(finished, "train", "metrics.jsonl"))]
    steps = [e["step"] for e in entries if "loss" in e]  # one row per micro-step (held-out rows aside)
    assert summary["steps_done"] == summary["micro_steps"] and steps[0] == 1 and len(set(steps)) == len(steps)


def test_artefacts_made_from_another_checkpoint_or_an_unfinished_stage_are_refused(finished, ckpt, tmp_path):
    from rise_jax.pipeline import PipelineError

    other = save_hf_model(
        make_hf_model("qwen3_moe", seed=10, vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=4),
        str(tmp_path / "b"),
    )
    c = config(other)  # same shape, other weights: the statistics of the first are stale for it
    c.stages = "select,train"
    with pytest.raises(PipelineError, match=r"stage select would use the artefacts of stage stats, made from another"):
        launch.run(c, finished)
    record = os.path.join(finished, ".rise", "select.json")
    json.dump({**json.load(open(record)), "status": "running"}, open(record, "w"))  # as if select failed
    c = config(ckpt)
    c.stages = "train"
    c.train.lr = 2e-3
    with pytest.raises(PipelineError, match=r"needs the artefacts of stage select, which did not finish"):
        launch.run(c, finished)


def test_a_deleted_artefact_is_made_again_and_a_corrupt_record_is_named(finished, ckpt):
    from rise_jax.pipeline import PipelineError

    os.remove(os.path.join(finished, "routing_stats", "stats.npz"))
    c = config(ckpt)
    c.stages = "stats"
    assert launch.run(c, finished) == {"stats": "ran"}
    assert os.path.isfile(os.path.join(finished, "routing_stats", "stats.npz"))
    record = os.path.join(finished, ".rise", "select.json")
    open(record, "w").write('{"fingerprint": ')
    c.stages = "select"
    with pytest.raises(PipelineError, match=f"{record}: unreadable pipeline record"):
        launch.run(c, finished)


def test_a_language_outside_the_old_table_goes_stats_to_train(tmp_path, ckpt):
    """Amharic and Hausa, found in a FLoRes tree by their codes alone, through stats, analyze,
    select and train."""
    import shutil

    tree = tmp_path / "flores"
    for code in ("eng_Latn", "amh_Ethi", "hau_Latn"):
        os.makedirs(tree / code)
        for split in ("dev", "train"):
            shutil.copy(os.path.join(FLORES, "eng_Latn", f"{split}.tsv"), tree / code / f"{split}.tsv")
    c = config(ckpt)
    c.stages = "stats,analyze,select,train"
    c.data.path = c.train.data.path = str(tree)
    c.data.languages = "en,amh,Hausa"
    c.select.target = "amh_Ethi"
    wd = str(tmp_path / "wd")
    assert launch.run(c, wd) == {s: "ran" for s in ("stats", "analyze", "select", "train")}
    sel = json.load(open(os.path.join(wd, "selection.json")))
    assert sel["target_language"] == "am" and sel["languages"] == ["en", "am", "ha"]
    assert json.load(open(os.path.join(wd, "train", "summary.json")))["language"] == "am"
    info = json.load(open(os.path.join(wd, "routing_stats", "summary.json")))["languages"]
    assert (info["am"]["as_written"], info["am"]["name"], info["ha"]["as_written"]) == ("amh", "Amharic", "Hausa")


def test_k_beyond_the_expert_pool_is_refused_before_the_replay(finished, ckpt):
    before = json.load(open(os.path.join(finished, ".rise", "stats.json")))
    c = config(ckpt)
    c.stages = "stats,select"
    c.data.max_samples = 7  # stats would rerun first
    c.select.k = 1000
    with pytest.raises(SelectionError, match=r"config.select.k: K = 1000 exceeds the pool of 32 experts"):
        launch.run(c, finished)
    assert json.load(open(os.path.join(finished, ".rise", "stats.json"))) == before


@pytest.mark.parametrize("where", ["checkpoint", "metrics"])
def test_a_full_disk_while_training_is_one_error_line_without_tracebacks(finished, ckpt, monkeypatch, capfd, where):
    """ENOSPC in orbax's checkpoint writer threads (its array writer, patched to fail) or in the
    metrics writer: the CLI prints one ``error:`` line naming the directory and where a rerun
    resumes, no traceback from any thread, and no partial checkpoint is left."""
    import errno

    from orbax.checkpoint._src.serialization import serialization  # what orbax's writer threads call

    from rise_jax.training import loop

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    async def full_async(*args, **kwargs):
        full()

    if where == "checkpoint":
        monkeypatch.setattr(serialization, "async_serialize_from_host", full_async)
    else:
        monkeypatch.setattr(loop, "_write_row", full)
    c = config(ckpt)
    c.stages = "train"
    c.train.lr = 2e-3  # a new run
    c.train.save_every = 2
    capfd.readouterr()
    with pytest.raises(SystemExit) as stop:
        launch.run_or_exit(launch.run, c, finished)
    assert stop.value.code == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err and "future.py" not in err, err
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.strip() and not x.startswith(("training", "loading"))]
    assert len(lines) == 1, lines
    target = "checkpoints; " if where == "checkpoint" else "metrics.jsonl; "
    assert lines[0].startswith("error: [Errno 28] no space left on device") and target in lines[0], lines[0]
    assert "training resumes from the start" in lines[0]
    ckpts = os.path.join(finished, "train", "checkpoints")
    assert not [n for n in os.listdir(ckpts) if "tmp" in n] if os.path.isdir(ckpts) else True
