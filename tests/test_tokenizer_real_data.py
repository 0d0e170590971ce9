"""The real Qwen3 and Phi-3.5-MoE tokenizers on FLoRes text, through tiny models with the real vocabularies."""

import csv
import os

import jax.numpy as jnp
import numpy as np
import pytest
from fixture_data import FLORES, tokenizer_dir
from hf_reference import hf_forward, load_hf_model, make_hf_model, save_hf_model

import rise_jax


def flores(code: str, n: int) -> list[str]:
    with open(os.path.join(FLORES, code, "dev.tsv"), encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["text"] for r in rows[:n]]


@pytest.mark.parametrize(
    "family,tok,vocab",
    [("qwen3_moe", "qwen3", 151936), ("phimoe", "phi35moe", 32064)],
)
def test_real_tokenizer_encodes_flores_and_both_families_run_end_to_end(tmp_path, family, tok, vocab):
    tokenizer = rise_jax.load_tokenizer(tokenizer_dir(tok))
    texts = flores("ben_Beng", 2) + flores("eng_Latn", 2)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(texts, padding=True, truncation=True, max_length=96, return_tensors="np")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.max() < vocab and mask.sum(1).min() > 5
    # Bengali costs more tokens per sentence than English (byte fallback / rare merges).
    assert tokenizer.decode(ids[2][mask[2] == 1], skip_special_tokens=True) == texts[2]

    hf = make_hf_model(family, seed=21, vocab_size=vocab, hidden_size=16, num_hidden_layers=2)
    path = save_hf_model(hf, str(tmp_path / "ckpt"))
    model, params = rise_jax.load_model(path, dtype="float32", progress=False)
    ref, _ = hf_forward(load_hf_model(path), ids, mask)
    out = rise_jax.forward(model, params, jnp.asarray(ids), jnp.asarray(mask), return_routing=True)
    real = mask.astype(bool)
    assert np.abs(np.asarray(out.logits) - ref)[real].max() < 1e-4
    assert out.routing.topk_indices.shape[:3] == (2, *ids.shape)


def test_chat_templates_are_available():
    qwen = rise_jax.load_tokenizer(tokenizer_dir("qwen3"))
    msgs = [{"role": "user", "content": "হ্যালো"}]
    text = qwen.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert text.startswith("<|im_start|>user\nহ্যালো<|im_end|>") and "<think>\n\n</think>" in text
    phi = rise_jax.load_tokenizer(tokenizer_dir("phi35moe"))
    assert (
        phi.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        == "<|user|>\nহ্যালো<|end|>\n<|assistant|>\n"
    )


def test_phi_tokenizer_keeps_sentencepiece_ids_on_leading_spaces():
    """PreTrainedTokenizerFast from tokenizer.json gives SentencePiece's pieces ('▁▁' = 259, '▁' = 29871);
    transformers 5.x AutoTokenizer rebuilds a Llama pipeline that drops a leading space."""
    phi = rise_jax.load_tokenizer(tokenizer_dir("phi35moe"))
    assert phi("  hello world", add_special_tokens=False).input_ids == [259, 22172, 3186]
    assert phi(" leading", add_special_tokens=False).input_ids == [29871, 8236]
    assert phi("plain text", add_special_tokens=False).input_ids == [8656, 1426]


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    from rise_jax.tokenizer import TokenizerError

    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        rise_jax.load_tokenizer(str(tmp_path))
