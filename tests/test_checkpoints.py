"""HF checkpoint loading (layouts, config styles), export round trips and clear errors."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_reference import hf_forward, load_hf_model, make_hf_model, padded_batch, save_hf_model
from safetensors.numpy import load_file
from safetensors.torch import save_file as torch_save_file

import rise_jax
from rise_jax.checkpoints import CheckpointError, load_hf_checkpoint


def _all_tensors(path):
    out = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            import torch as _t
            from safetensors.torch import load_file as tload

            out.update(
                {k: v.view(_t.int32) if v.dtype == _t.float32 else v for k, v in tload(os.path.join(path, f)).items()}
            )
    return out


def _logits(model, params, ids, mask):
    return np.asarray(rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask)).logits)


ALL_FAMILIES = ["qwen3_moe", "phimoe", "olmoe", "qwen2_moe", "mixtral", "gpt_oss"]
HUB_CLASS = {
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "phimoe": "PhiMoEForCausalLM",
    "olmoe": "OlmoeForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "gpt_oss": "GptOssForCausalLM",
}


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_hf_to_ours_to_hf_is_bit_identical_including_negative_zero(tmp_path, family):
    hf = make_hf_model(family, seed=11)
    with torch.no_grad():
        next(p for n, p in hf.named_parameters() if "q_proj" in n).view(-1)[0] = -0.0
    src = save_hf_model(hf, str(tmp_path / "src"))
    model, params = rise_jax.load_model(src, dtype="float32", progress=False)
    out = rise_jax.export_model(model, params, str(tmp_path / "out"), source_dir=src, progress=False)
    a, b = _all_tensors(src), _all_tensors(out)
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k  # compares the int32 bit patterns of fp32 tensors


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_export_loads_in_transformers_with_identical_logits(tmp_path, family):
    tied = family in ("phimoe", "olmoe")
    src = save_hf_model(make_hf_model(family, seed=12, tie_word_embeddings=tied), str(tmp_path / "s"))
    model, params = rise_jax.load_model(src, dtype="float32", progress=False)
    # Without source_dir: config.json is generated from our ModelConfig.
    out = rise_jax.export_model(model, params, str(tmp_path / "o"), max_shard_bytes=20_000, progress=False)
    assert os.path.isfile(os.path.join(out, "model.safetensors.index.json"))  # several shards
    with open(os.path.join(out, "config.json")) as fh:  # the hub's class name: what vLLM looks up
        assert json.load(fh)["architectures"] == [HUB_CLASS[family]]
    ids, mask = padded_batch(model.cfg.vocab_size, [9, 6], 9, [False, True], seed=1)
    ref, _ = hf_forward(load_hf_model(src), ids, mask)
    got, _ = hf_forward(load_hf_model(out), ids, mask)
    np.testing.assert_array_equal(got, ref)
    ours = _logits(model, params, ids, mask)
    assert np.abs(ours - got)[mask.astype(bool)].max() < 1e-4


def test_sharded_checkpoint_with_index_loads(tmp_path):
    hf = make_hf_model("qwen3_moe", seed=13)
    single = save_hf_model(hf, str(tmp_path / "one"))
    sharded = save_hf_model(hf, str(tmp_path / "many"), max_shard_size="20KB")
    assert len([f for f in os.listdir(sharded) if f.endswith(".safetensors")]) > 1
    _, p1 = rise_jax.load_model(single, dtype="float32", progress=False)
    _, p2 = rise_jax.load_model(sharded, dtype="float32", progress=False)
    for a, b in zip(_leaves(p1), _leaves(p2), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("family", ["qwen3_moe", "phimoe", "olmoe", "qwen2_moe", "mixtral"])
def test_fused_expert_layout_loads_like_hub_layout(tmp_path, family):
    hf = make_hf_model(family, seed=14)
    hub = save_hf_model(hf, str(tmp_path / "hub"))
    fused = tmp_path / "fused"
    fused.mkdir()
    shutil.copy(os.path.join(hub, "config.json"), fused / "config.json")
    # transformers 5.x holds experts fused in memory; its state_dict is the fused layout.
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    assert any(k.endswith("experts.gate_up_proj") for k in state)
    torch_save_file(state, str(fused / "model.safetensors"), metadata={"format": "pt"})
    _, p_hub = rise_jax.load_model(hub, dtype="float32", progress=False)
    _, p_fused = rise_jax.load_model(str(fused), dtype="float32", progress=False)
    for a, b in zip(_leaves(p_hub), _leaves(p_fused), strict=True):
        np.testing.assert_array_equal(a, b)


def test_transformers_4x_config_keys_are_accepted(tmp_path):
    """4.x configs: rope_theta/rope_scaling{type} at top level, num_local_experts on Qwen3."""
    from hf_reference import longrope

    src = save_hf_model(make_hf_model("phimoe", seed=15, rope_parameters=longrope(8, 12)), str(tmp_path / "p"))
    with open(os.path.join(src, "config.json")) as fh:
        cfg = json.load(fh)
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    rope["type"] = rope.pop("rope_type")
    cfg["rope_scaling"] = rope
    with open(os.path.join(src, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    mcfg = load_hf_checkpoint(src, jnp.float32, progress=False).config
    assert mcfg.rope.rope_type == "longrope" and mcfg.rope.original_max_position_embeddings == 12
    assert mcfg.rope.long_mscale == 1.2

    q = rise_jax.config_from_hf_dict({"model_type": "qwen3_moe", **_qwen_keys(), "num_local_experts": 8})
    assert q.num_experts == 8
    q = rise_jax.config_from_hf_dict({"model_type": "qwen3_moe", **_qwen_keys(), "num_experts": 8, "rope_theta": 5e5})
    assert q.rope.theta == 5e5


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_bf16_load_casts_and_roundtrips_bf16_checkpoints(tmp_path, family):
    hf = make_hf_model(family, seed=16).to(torch.bfloat16)
    src = save_hf_model(hf, str(tmp_path / "bf16"))
    model, params = rise_jax.load_model(src, dtype="bfloat16", progress=False)
    assert params["layers"]["moe"]["experts"]["gate_proj"].dtype == jnp.bfloat16
    out = rise_jax.export_model(model, params, str(tmp_path / "o"), source_dir=src, progress=False)
    a, b = load_file(os.path.join(src, "model.safetensors")), load_file(os.path.join(out, "model.safetensors"))
    assert sorted(a) == sorted(b)
    assert all(np.array_equal(a[k].view(np.uint16), b[k].view(np.uint16)) for k in a)


# ---- clear errors -------------------------------------------------------------------------------


@pytest.fixture
def qwen_copy(tmp_path, qwen_dir):
    dst = tmp_path / "ckpt"
    shutil.copytree(qwen_dir, dst)
    return str(dst)


def _rewrite(path, drop=(), add=None, reshape=None):
    f = os.path.join(path, "model.safetensors")
    t = load_file(f)
    for k in drop:
        del t[k]
    if reshape:
        t[reshape] = np.zeros(t[reshape].shape[::-1] + (1,), t[reshape].dtype)
    t.update(add or {})
    os.remove(f)
    from safetensors.numpy import save_file

    save_file(t, f, metadata={"format": "pt"})
    return f


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope: checkpoint directory does not exist"):
        load_hf_checkpoint(str(tmp_path / "nope"))


def test_missing_config_is_named(qwen_copy):
    os.remove(os.path.join(qwen_copy, "config.json"))
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_hf_checkpoint(qwen_copy)


def test_unreadable_config_is_named(qwen_copy):
    with open(os.path.join(qwen_copy, "config.json"), "w") as fh:
        fh.write("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: unreadable config"):
        load_hf_checkpoint(qwen_copy)


def test_unknown_model_type_is_named(qwen_copy):
    p = os.path.join(qwen_copy, "config.json")
    cfg = json.load(open(p))
    cfg["model_type"] = "jamba"
    json.dump(cfg, open(p, "w"))
    with pytest.raises(CheckpointError, match=r"config\.json: model_type 'jamba' is not supported"):
        load_hf_checkpoint(qwen_copy)


def test_missing_tensor_is_named(qwen_copy):
    _rewrite(qwen_copy, drop=["model.layers.1.mlp.experts.3.up_proj.weight"])
    with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.1\.mlp\.experts\.3\.up_proj\.weight'"):
        load_hf_checkpoint(qwen_copy)


def test_unexpected_tensor_is_named_with_its_file(qwen_copy):
    f = _rewrite(qwen_copy, add={"model.layers.0.mlp.shared_expert.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(
        CheckpointError, match=rf"unexpected tensor.*'model\.layers\.0\.mlp\.shared_expert\.weight' in {f}"
    ):
        load_hf_checkpoint(qwen_copy)


def test_only_declared_multi_token_prediction_layers_are_skipped(qwen_copy):
    """Layers past ``num_hidden_layers`` load (skipped) only as many as config.json declares MTP
    layers; one more is refused, so a config that undercounts its layers is never truncated."""
    p = os.path.join(qwen_copy, "config.json")
    cfg = json.load(open(p))
    n = cfg["num_hidden_layers"]
    extra = {f"model.layers.{n}.eh_proj.weight": np.zeros((2, 2), np.float32)}
    f = _rewrite(qwen_copy, add=extra)
    with pytest.raises(CheckpointError, match=rf"unexpected tensor.*'model\.layers\.{n}\.eh_proj\.weight' in {f}"):
        load_hf_checkpoint(qwen_copy)
    cfg["num_nextn_predict_layers"] = 1  # the hubs' spelling (DeepSeek-V3, GLM-4.5)
    json.dump(cfg, open(p, "w"))
    assert load_hf_checkpoint(qwen_copy).config.num_layers == n
    _rewrite(qwen_copy, add={f"model.layers.{n + 1}.eh_proj.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(CheckpointError, match=rf"unexpected tensor.*'model\.layers\.{n + 1}\.eh_proj\.weight'"):
        load_hf_checkpoint(qwen_copy)


def test_misshaped_tensor_is_named_with_both_shapes(qwen_copy):
    f = _rewrite(qwen_copy, reshape="model.layers.2.self_attn.k_proj.weight")
    with pytest.raises(
        CheckpointError,
        match=rf"{f}: tensor 'model\.layers\.2\.self_attn\.k_proj\.weight' has shape \[32, 16, 1\], expected \[16, 32\]",
    ):
        load_hf_checkpoint(qwen_copy)


def test_shard_listed_in_index_but_missing_is_named(tmp_path):
    path = save_hf_model(make_hf_model("qwen3_moe"), str(tmp_path / "c"), max_shard_size="20KB")
    victim = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))[1]
    os.remove(os.path.join(path, victim))
    with pytest.raises(CheckpointError, match=rf"{victim}: missing \(listed in .*model\.safetensors\.index\.json\)"):
        load_hf_checkpoint(path)


def test_pickle_only_checkpoint_says_how_to_convert(qwen_copy):
    os.remove(os.path.join(qwen_copy, "model.safetensors"))
    open(os.path.join(qwen_copy, "pytorch_model.bin"), "wb").write(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match=r"only pickled weights \(pytorch_model\.bin\).*save_pretrained"):
        load_hf_checkpoint(qwen_copy)


def test_corrupt_safetensors_file_is_named(qwen_copy):
    open(os.path.join(qwen_copy, "model.safetensors"), "wb").write(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a safetensors file"):
        load_hf_checkpoint(qwen_copy)


def test_export_refuses_to_overwrite_and_leaves_no_partial_directory(tmp_path, qwen_dir):
    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    out = tmp_path / "exp"
    out.mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        rise_jax.export_model(model, params, str(out), progress=False)
    broken = dict(params)
    broken.pop("final_norm")
    with pytest.raises(KeyError, match="final_norm"):
        rise_jax.export_model(model, broken, str(tmp_path / "exp2"), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["exp"]


def _leaves(params):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]


def _qwen_keys():
    from hf_reference import QWEN_BASE

    return {k: v for k, v in QWEN_BASE.items() if k != "num_experts"}


def _write_safetensors(path, header, data):
    """A safetensors file with exactly this header (JSON) and data section."""
    import struct

    blob = json.dumps(header).encode() if not isinstance(header, bytes) else header
    open(path, "wb").write(struct.pack("<Q", len(blob)) + blob + data)


@pytest.mark.parametrize(
    "header,data,message",
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, bytes(8), r"tensor 'a'.*outside the data"),
        (  # b re-reads a's bytes
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            },
            bytes(8),
            r"tensor '(a|b)'.*overlaps the previous tensor",
        ),
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8), r"tensor 'a'.*outside the data"),
        ([1, 2], b"", r"header is not a JSON object"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"", r"tensor 'a'.*outside the data"),
        ({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, bytes(8), r"tensor 'a'.*needs dtype, shape and data_offsets"),
        (b"[" * 100_000 + b"]" * 100_000, b"", r"cannot read safetensors header"),
        ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(8), r"cover 4 of the 8 data bytes"),
    ],
    ids=["negative", "overlap", "past-end", "not-object", "header-only", "no-shape", "deep", "gap"],
)
def test_a_safetensors_header_is_checked_like_the_library_does(tmp_path, header, data, message):
    """Offsets are never trusted: each malformed header is refused with the file and tensor named
    (before, negative or overlapping offsets silently loaded other bytes as weights)."""
    from rise_jax.checkpoints.safetensors_io import SafetensorsFile, SafetensorsFormatError

    path = str(tmp_path / "bad.safetensors")
    _write_safetensors(path, header, data)
    with pytest.raises(SafetensorsFormatError, match=f"bad.safetensors: .*{message}"):
        SafetensorsFile(path)


def test_an_index_may_not_point_outside_the_checkpoint(qwen_copy, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(os.path.join(qwen_copy, "model.safetensors"), outside)
    names = list(load_file(os.path.join(qwen_copy, "model.safetensors")))
    index = {"metadata": {}, "weight_map": dict.fromkeys(names, "../elsewhere.safetensors")}
    json.dump(index, open(os.path.join(qwen_copy, "model.safetensors.index.json"), "w"))
    with pytest.raises(CheckpointError, match=r"'\.\./elsewhere\.safetensors' lies outside the checkpoint directory"):
        load_hf_checkpoint(qwen_copy)


def test_non_finite_weights_are_refused_at_load_naming_the_tensor(qwen_copy):
    path = os.path.join(qwen_copy, "model.safetensors")
    tensors = load_file(path)
    name = "model.layers.1.mlp.experts.3.down_proj.weight"
    if name not in tensors:  # fused layout
        name = next(k for k in tensors if "layers.1.mlp.experts" in k and "down" in k)
    tensors[name] = tensors[name].copy()
    tensors[name].flat[5] = np.nan
    torch_save_file({k: torch.from_numpy(v) for k, v in tensors.items()}, path)
    with pytest.raises(CheckpointError, match=f"model.safetensors: tensor '{name}': non-finite values"):
        load_hf_checkpoint(qwen_copy, dtype=jnp.float32, progress=False)


def test_export_is_readable_by_others_and_clears_what_killed_exports_left(tmp_path, qwen_dir):
    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)
    stale = tmp_path / ".exp.tmp-999999999-abcd"  # a process that no longer runs (kill -9 mid-export)
    stale.mkdir()
    (stale / "model-00001-of-00009.safetensors").write_bytes(b"partial")
    old = os.umask(0o022)
    try:
        out = rise_jax.export_model(model, params, str(tmp_path / "exp"), progress=False)
    finally:
        os.umask(old)
    assert sorted(os.listdir(tmp_path)) == ["exp"]
    assert os.stat(out).st_mode & 0o777 == 0o755
    assert {os.stat(os.path.join(out, f)).st_mode & 0o777 for f in os.listdir(out)} == {0o644}


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("num_attention_heads", 0, r"num_attention_heads = 0 must be a whole number >= 1"),
        ("hidden_size", "64", r"hidden_size = '64' must be a whole number >= 1"),
        ("num_key_value_heads", 3, r"num_attention_heads = 4 is not a multiple of num_key_value_heads = 3"),
    ],
)
def test_bad_numbers_in_config_json_are_named(qwen_copy, key, value, message):
    path = os.path.join(qwen_copy, "config.json")
    cfg = json.load(open(path))
    cfg[key] = value
    json.dump(cfg, open(path, "w"))
    with pytest.raises(CheckpointError, match=f"config.json: {message}"):
        load_hf_checkpoint(qwen_copy)


def test_a_full_disk_during_export_is_a_named_error_and_leaves_nothing(tmp_path, qwen_dir, monkeypatch):
    import safetensors.numpy
    from safetensors import SafetensorError

    model, params = rise_jax.load_model(qwen_dir, dtype="float32", progress=False)

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(safetensors.numpy, "save_file", full_disk)
    with pytest.raises(OSError, match=r"shard-00000.safetensors: cannot write the safetensors file .*StorageFull"):
        rise_jax.export_model(model, params, str(tmp_path / "exp"), progress=False)
    assert os.listdir(tmp_path) == []
