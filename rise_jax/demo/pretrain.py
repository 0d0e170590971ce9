"""Pretrain the demo model from scratch in JAX and save it as an HF checkpoint with a tokenizer.

The model is a small Qwen3-MoE (same architecture and parameter layout as Qwen3-30B-A3B, a few
hundred thousand parameters); the data is the skewed pretraining mix of
:mod:`rise_jax.demo.corpus`; the tokenizer is a byte-level BPE trained on that mix with the
``tokenizers`` library. The loss is the causal-LM loss plus Qwen3-MoE's load-balancing loss
(Switch-Transformer form ``E · Σ_i f_i · P_i``, coefficient ``aux_coef``) so every expert is used.
Everything is seeded, so the checkpoint is the same on every run of the same versions.

Output directory (an ordinary HF checkpoint that the whole pipeline and ``transformers`` load):
``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
``generation_config.json``, ``pretrain.json`` (settings and loss curve).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from rise_jax.checkpoints import export_hf_checkpoint
from rise_jax.demo.corpus import LANGUAGES, pretrain_lines, write_corpus
from rise_jax.io_utils import temp_dir_beside, write_json_atomic
from rise_jax.models.families import config_from_hf_dict
from rise_jax.models.lm_loss import lm_loss_sums
from rise_jax.models.transformer import MoEModel, RuntimeOptions
from rise_jax.workdir import Workdir

PAD, EOS = "<pad>", "<eos>"


@dataclasses.dataclass(frozen=True)
class PretrainOptions:
    """Model size and pretraining schedule of the demo (``configs/demo.py`` sets these)."""

    vocab_size: int = 768
    hidden_size: int = 64
    num_layers: int = 8
    num_experts: int = 16
    top_k: int = 4
    moe_intermediate_size: int = 48
    steps: int = 400
    batch_size: int = 32
    max_length: int = 40
    lr: float = 3e-3
    aux_coef: float = 0.01
    seed: int = 0

    def hf_config(self) -> dict[str, Any]:
        return {
            "model_type": "qwen3_moe",
            "architectures": ["Qwen3MoeForCausalLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": 2 * self.hidden_size,
            "moe_intermediate_size": self.moe_intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": self.hidden_size // 4,
            "num_experts": self.num_experts,
            "num_experts_per_tok": self.top_k,
            "norm_topk_prob": True,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "max_position_embeddings": 256,
            "tie_word_embeddings": False,
            "mlp_only_layers": [],
            "decoder_sparse_step": 1,
            "router_aux_loss_coef": self.aux_coef,
            "bos_token_id": None,
            "eos_token_id": 1,
            "pad_token_id": 0,
        }


def train_tokenizer(lines: list[str], vocab_size: int, out_dir: str) -> None:
    """Byte-level BPE over ``lines`` -> ``tokenizer.json`` + ``tokenizer_config.json`` in ``out_dir``.

    Ids 0 and 1 are ``<pad>`` and ``<eos>``; the post-processor appends ``<eos>`` to every text
    encoded with special tokens, so each sentence ends the way the model was trained.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 1)])
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as fh:
        json.dump({"eos_token": EOS, "pad_token": PAD, "model_max_length": 256, "padding_side": "right"}, fh, indent=2)


def _encode(tokenizer_path: str, lines: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    encoded = [e.ids[:max_length] for e in tok.encode_batch(lines)]
    longest = max(len(e) for e in encoded)
    ids = np.zeros((len(encoded), longest), np.int32)
    mask = np.zeros((len(encoded), longest), np.int32)
    for i, e in enumerate(encoded):
        ids[i, : len(e)], mask[i, : len(e)] = e, 1
    return ids, mask


def _loss_fn(params, model: MoEModel, ids, mask, aux_coef: float):
    out = model.apply({"params": params}, ids, mask, return_routing=True)
    total, count = lm_loss_sums(out.logits, ids, mask)
    lm = total / count
    # Load balancing over real tokens, averaged over layers: E * sum_i f_i * P_i.
    real = mask.astype(jnp.float32)[None, :, :, None]
    denom = jnp.sum(real, axis=(1, 2))
    f = jnp.sum(out.routing.activation_mask() * real, axis=(1, 2)) / denom / model.cfg.top_k
    p = jnp.sum(out.routing.router_probs() * real, axis=(1, 2)) / denom
    aux = model.cfg.num_experts * jnp.mean(jnp.sum(f * p, axis=-1))
    return lm + aux_coef * aux, (lm, aux)


def pretrain(out_dir: str, opts: PretrainOptions = PretrainOptions(), progress: bool = True) -> str:
    """Write the corpus, train the tokenizer and the model, export the checkpoint to ``out_dir``.

    Returns ``out_dir``; an existing checkpoint there made with the same options is kept as is, one
    made with other options (``pretrain.json``) is replaced.
    """
    if os.path.isfile(os.path.join(out_dir, "config.json")):
        try:
            with open(os.path.join(out_dir, "pretrain.json"), encoding="utf-8") as fh:
                made_with = json.load(fh).get("options")
        except (OSError, ValueError, AttributeError):
            made_with = None
        if made_with == dataclasses.asdict(opts):
            return out_dir
        shutil.rmtree(out_dir)  # another demo model: build the one asked for
    t0 = time.perf_counter()
    work = temp_dir_beside(os.path.join(os.path.dirname(os.path.abspath(out_dir)), "pretrain"))
    try:
        lines = pretrain_lines(opts.seed)
        train_tokenizer(lines, opts.vocab_size, work)
        ids, mask = _encode(os.path.join(work, "tokenizer.json"), lines, opts.max_length)
        hf_config = opts.hf_config()
        cfg = config_from_hf_dict(hf_config, source="demo config")
        model = MoEModel(cfg, RuntimeOptions())
        params = model.init(jax.random.PRNGKey(opts.seed), jnp.zeros((1, 1), jnp.int32))["params"]
        schedule = optax.warmup_cosine_decay_schedule(0.0, opts.lr, max(1, opts.steps // 20), opts.steps, opts.lr / 10)
        tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01))
        opt_state = tx.init(params)

        @jax.jit
        def step(params, opt_state, ids, mask):
            (loss, (lm, aux)), grads = jax.value_and_grad(_loss_fn, has_aux=True)(
                params, model, ids, mask, opts.aux_coef
            )
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, lm, aux

        rng = np.random.RandomState(opts.seed)
        curve = []
        bar = tqdm(range(opts.steps), desc="demo pretraining", disable=not progress)
        for i in bar:
            rows = rng.randint(0, len(ids), opts.batch_size)  # one shape for every step: one compile
            params, opt_state, lm, aux = step(params, opt_state, ids[rows], mask[rows])
            if i % 20 == 0 or i == opts.steps - 1:
                curve.append({"step": i, "lm_loss": float(lm), "balance_loss": float(aux)})
                bar.set_postfix(loss=f"{float(lm):.3f}")
        params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
        write_json_atomic(os.path.join(work, "generation_config.json"), {"eos_token_id": 1, "pad_token_id": 0})
        export_hf_checkpoint(params, cfg, out_dir, hf_config=hf_config, tokenizer_dir=work, progress=False)
        shutil.copyfile(os.path.join(work, "generation_config.json"), os.path.join(out_dir, "generation_config.json"))
        summary = {
            "options": dataclasses.asdict(opts),
            "languages": list(LANGUAGES),
            "sentences": len(lines),
            "tokens": int(mask.sum()),
            "loss_curve": curve,
            "seconds": time.perf_counter() - t0,
        }
        write_json_atomic(os.path.join(out_dir, "pretrain.json"), summary)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def build_demo(wd: Workdir, opts: PretrainOptions = PretrainOptions(), progress: bool = True) -> tuple[str, str]:
    """The demo's corpus (``<workdir>/demo/corpus``) and pretrained checkpoint
    (``<workdir>/demo/checkpoint``), each made once and reused."""
    corpus = wd.demo_corpus
    if not all(os.path.isfile(os.path.join(corpus, f)) for f in ("counts.json", os.path.join("task", "en.txt"))):
        write_corpus(corpus, opts.seed)
    return corpus, pretrain(wd.demo_checkpoint, opts, progress)
