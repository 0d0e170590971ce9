"""The train and export stages, training data preparation, and their clear errors."""

import json
import os

import numpy as np
import pytest
from hf_reference import SHARED_DATA, make_hf_model, save_hf_model

import rise_jax
from rise_jax import launch
from rise_jax.configs import base  # noqa: E402
from rise_jax.data.sources import Example
from rise_jax.selection.algorithms import SelectionError
from rise_jax.training.data import TrainingDataError, build_training_set

QWEN_TOK = os.path.join(SHARED_DATA, "tokenizers", "qwen3")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model = make_hf_model("qwen3_moe", seed=9, vocab_size=151936, hidden_size=32, num_hidden_layers=4)
    return save_hf_model(model, str(tmp_path_factory.mktemp("ck")))


def config(ckpt_dir):
    c = base.get_base_config()
    c.model.checkpoint = ckpt_dir
    c.model.tokenizer = QWEN_TOK
    c.model.dtype = "float32"
    c.data.path = c.train.data.path = os.path.join(SHARED_DATA, "flores200")
    c.data.languages = "en,bn,sw"
    c.data.max_samples = 8
    c.select.k = 4
    c.train.data.max_samples = 12
    c.train.data.max_length = 40
    c.train.epochs = 1
    c.train.batch_size = 2
    c.train.grad_accum = 2
    c.train.eval_every = 2
    c.train.lr = 1e-3
    return c


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
    from rise_jax.pipeline import record_path

    c = config(ckpt)
    c.stages = "train"
    # As if the process died after its last checkpoint: the pipeline record still says running.
    record = json.load(open(record_path(trained, "train")))
    json.dump({**record, "status": "running"}, open(record_path(trained, "train"), "w"))
    launch.run(c, trained)  # the final checkpoint is found: no step is recomputed
    summary = json.load(open(os.path.join(trained, "train", "summary.json")))
    assert summary["status"] == "completed" and summary["final_loss"] is None and summary["steps_done"] == 6


def test_selection_from_another_model_shape_is_refused(tmp_path, trained):
    other = save_hf_model(make_hf_model("qwen3_moe", seed=1, num_experts=16, vocab_size=151936), str(tmp_path / "o"))
    wd = tmp_path / "wd"
    wd.mkdir()
    import shutil

    shutil.copy(os.path.join(trained, "selection.json"), wd / "selection.json")
    c = config(other)
    c.stages = "train"
    with pytest.raises(SelectionError, match=r"selection made for .* = \(4, 8, 2\), but the model has \(3, 16, 2\)"):
        launch.run(c, str(wd))


def test_empty_training_data_is_a_clear_error(tmp_path):
    tok = rise_jax.load_tokenizer(QWEN_TOK)
    with pytest.raises(TrainingDataError, match="no training examples"):
        build_training_set([], tok, 32)
    with pytest.raises(TrainingDataError, match="no usable training sequences"):
        build_training_set([Example("0", "a")], tok, 32)
    with pytest.raises(TrainingDataError, match="completion-only training needs QA/MGSM data"):
        build_training_set([Example("0", "some text")], tok, 32, completion_only=True)


def test_long_sequences_are_truncated_and_counted_and_completion_masks_the_prompt():
    tok = rise_jax.load_tokenizer(QWEN_TOK)
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
