"""Pretrain a small Qwen3-MoE from scratch in JAX and save HF checkpoints (the ``pretrain`` stage).

The model has Qwen3-30B-A3B's architecture and parameter layout at toy size
(:class:`PretrainOptions`: layers, experts, top-k, width); the data is a corpus of
:mod:`rise_jax.testbed.corpus` (the demo's six languages, or cipher languages of one base corpus in
a chosen mix). The loss is the causal-LM loss plus the families' auxiliary router losses
(:mod:`rise_jax.models.router_losses`): ``balance_weight`` × Switch load balancing (HF's
``router_aux_loss_coef``, written to ``config.json``) and ``z_loss_weight`` × ST-MoE's z-loss.
Everything is seeded, and the batch of a step depends on that step alone
(:mod:`rise_jax.testbed.mix`), so a resumed run continues exactly as an uninterrupted one.

Layout of ``<workdir>/pretrain`` (:class:`~rise_jax.workdir.Workdir`): ``corpus/`` (the text every
later stage reads), ``tokenizer/`` (made once per run), ``state/`` (orbax: the resumable
``{step, weights, opt_state}``, :mod:`rise_jax.training.artefacts`), ``loss_curve.json``,
``steps/<step>/`` (an HF checkpoint at each of ``save_steps``) and ``checkpoint/`` (the HF checkpoint
of the last step). Each HF checkpoint is written into a temp directory and renamed into place, and
holds ``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
``generation_config.json`` and ``pretrain.json`` (options, step, corpus, loss curve).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from tqdm import tqdm

from rise_jax.checkpoints import export_hf_checkpoint
from rise_jax.config_values import comma_list
from rise_jax.errors import SettingError
from rise_jax.io_utils import publish_dir, read_json_object, temp_dir_beside, write_json_atomic
from rise_jax.models.families import config_from_hf_dict
from rise_jax.models.lm_loss import lm_loss_sums
from rise_jax.models.router_losses import load_balancing_loss, router_z_loss
from rise_jax.models.transformer import MoEModel, RuntimeOptions
from rise_jax.testbed.corpus import PretrainCorpus, write_cipher_corpus, write_demo_corpus
from rise_jax.testbed.mix import batch_rows, row_streams, shares
from rise_jax.training.artefacts import open_checkpoints, restore_training_state, save_training_state
from rise_jax.workdir import Workdir

PAD, EOS = "<pad>", "<eos>"
CORPORA = ("demo", "cipher")


def _floats(value: Any, where: str) -> list[float]:
    try:
        return [float(x) for x in comma_list(value)]
    except (TypeError, ValueError):
        raise SettingError(f"{where} = {value!r}: give comma-separated numbers") from None


@dataclasses.dataclass(frozen=True)
class PretrainOptions:
    """``config.pretrain``: the corpus, the model's size and the schedule (configs/base.py
    documents each field; ``vocab_size`` is the BPE's, a cipher corpus's is its word count)."""

    corpus: str = "demo"
    languages: str = ""
    shared: str = ""
    mix: str = ""
    vocab_size: int = 768
    hidden_size: int = 64
    num_layers: int = 8
    num_experts: int = 16
    top_k: int = 4
    moe_intermediate_size: int = 48
    steps: int = 300
    batch_size: int = 32
    max_length: int = 40
    lr: float = 3e-3
    balance_weight: float = 0.0025
    z_loss_weight: float = 0.0
    save_steps: str = ""
    save_every: int = 100
    seed: int = 0

    @classmethod
    def from_config(cls, section: Any) -> PretrainOptions:
        """The options of ``config.pretrain``, checked (errors name the field)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in section.items() if k in known}
        opts = cls(**values)
        opts.check()
        return opts

    def check(self) -> None:
        where = "config.pretrain"
        if self.corpus not in CORPORA:
            raise SettingError(f"{where}.corpus = {self.corpus!r}: choose one of {', '.join(CORPORA)}")
        for name in ("hidden_size", "num_layers", "num_experts", "top_k", "steps", "batch_size", "save_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingError(f"{where}.{name} = {value!r}: must be a whole number >= 1")
        if self.top_k > self.num_experts:
            raise SettingError(f"{where}.top_k = {self.top_k} exceeds num_experts = {self.num_experts}")
        if self.hidden_size % 4:
            raise SettingError(f"{where}.hidden_size = {self.hidden_size}: must be a multiple of 4 (4 heads)")
        for name in ("lr", "balance_weight", "z_loss_weight"):
            if not float(getattr(self, name)) >= 0:
                raise SettingError(f"{where}.{name} = {getattr(self, name)!r}: must be >= 0")
        bad = [s for s in self.saved_steps() if not 1 <= s <= self.steps]
        if bad:
            raise SettingError(f"{where}.save_steps = {self.save_steps!r}: steps {bad} are outside 1..{self.steps}")
        if self.corpus == "cipher":
            codes = comma_list(self.languages)
            shared, mix = _floats(self.shared, f"{where}.shared"), _floats(self.mix, f"{where}.mix")
            if not codes or len(shared) != len(codes) or len(mix) != len(codes):
                raise SettingError(
                    f"{where}: languages ({len(codes)}), shared ({len(shared)}) and mix ({len(mix)}) must "
                    "list one value per cipher language"
                )
            try:
                shares(mix)
            except ValueError as err:
                raise SettingError(f"{where}.mix: {err}") from None
            if any(not 0 <= s <= 1 for s in shared):
                raise SettingError(f"{where}.shared = {self.shared!r}: each share must lie in [0, 1]")

    def saved_steps(self) -> list[int]:
        """The steps whose HF checkpoints are kept under ``steps/`` (besides the last one's
        ``checkpoint/``)."""
        try:
            return sorted({int(s) for s in comma_list(self.save_steps)})
        except (TypeError, ValueError):
            raise SettingError(f"config.pretrain.save_steps = {self.save_steps!r}: give step numbers") from None

    def hf_config(self, vocab_size: int) -> dict[str, Any]:
        return {
            "model_type": "qwen3_moe",
            "architectures": ["Qwen3MoeForCausalLM"],
            "vocab_size": vocab_size,
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
            "output_router_logits": False,
            "router_aux_loss_coef": self.balance_weight,
            "bos_token_id": None,
            "eos_token_id": 1,
            "pad_token_id": 0,
        }


# -- tokenizers ----------------------------------------------------------------------------------


def _tokenizer_config(out_dir: str) -> None:
    write_json_atomic(
        os.path.join(out_dir, "tokenizer_config.json"),
        {"eos_token": EOS, "pad_token": PAD, "model_max_length": 256, "padding_side": "right"},
    )
    write_json_atomic(os.path.join(out_dir, "generation_config.json"), {"eos_token_id": 1, "pad_token_id": 0})


def train_bpe(lines: list[str], vocab_size: int, out_dir: str) -> None:
    """Byte-level BPE over ``lines`` -> ``tokenizer.json`` + ``tokenizer_config.json`` in ``out_dir``.

    Ids 0 and 1 are ``<pad>`` and ``<eos>``; the post-processor appends ``<eos>`` to every text
    encoded with special tokens, so each sentence ends the way the model was trained."""
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
    _tokenizer_config(out_dir)


def write_word_tokenizer(vocab: list[str], out_dir: str) -> None:
    """A word-level tokenizer (one id per space-separated word, ``vocab[0:2]`` = ``<pad>``,
    ``<eos>``; ``<eos>`` appended as by the BPE) -> ``tokenizer.json`` + configs in ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 1)])
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    _tokenizer_config(out_dir)


def _encode(tokenizer_dir: str, lines: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """``lines`` as ids and mask ``[N, max_length]`` (one shape for every batch: one compile)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
    ids = np.zeros((len(lines), max_length), np.int32)
    mask = np.zeros((len(lines), max_length), np.int32)
    for i, e in enumerate(tok.encode_batch(lines)):
        row = e.ids[:max_length]
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return ids, mask


# -- training ------------------------------------------------------------------------------------


class PretrainState(NamedTuple):
    """The resumable state (one orbax pytree): steps done, the weights, the optimiser state."""

    step: Any
    weights: Any
    opt_state: Any


def _loss_fn(params, model: MoEModel, ids, mask, balance_weight: float, z_weight: float):
    out = model.apply({"params": params}, ids, mask, return_routing=True)
    total, count = lm_loss_sums(out.logits, ids, mask)
    lm = total / count
    balance = load_balancing_loss(out.routing, mask)
    z = router_z_loss(out.routing, mask)
    return lm + balance_weight * balance + z_weight * z, (lm, balance, z)


@functools.lru_cache(maxsize=4)
def _trainer(hf_json: str, lr: float, steps: int, balance_weight: float, z_weight: float):
    """The model config, a compiled init, the optimiser and the compiled training step of one
    setting, made once per process (a resumed or repeated run in the same process, as in the
    tests and the study, compiles nothing again)."""
    cfg = config_from_hf_dict(json.loads(hf_json), source="config.pretrain")
    model = MoEModel(cfg, RuntimeOptions())
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 20), steps, lr / 10)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01))

    @jax.jit
    def step_fn(params, opt_state, ids, mask):
        grad_fn = jax.value_and_grad(_loss_fn, has_aux=True)
        (_, aux), grads = grad_fn(params, model, ids, mask, balance_weight, z_weight)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, aux

    # one compiled init (op by op, the initialisers alone would compile a hundred small programs)
    return cfg, jax.jit(model.init), tx, step_fn


def write_corpus(opts: PretrainOptions, directory: str) -> PretrainCorpus:
    if opts.corpus == "cipher":
        return write_cipher_corpus(
            directory,
            comma_list(opts.languages),
            _floats(opts.shared, "config.pretrain.shared"),
            _floats(opts.mix, "config.pretrain.mix"),
            opts.seed,
        )
    return write_demo_corpus(directory, opts.seed)


def _tokenizer(opts: PretrainOptions, corpus: PretrainCorpus, directory: str) -> int:
    """The run's tokenizer in ``directory`` (made once: a resumed run keeps it); its vocabulary size."""
    if not os.path.isfile(os.path.join(directory, "tokenizer.json")):
        tmp = temp_dir_beside(directory)
        if corpus.vocab is not None:
            write_word_tokenizer(corpus.vocab, tmp)
        else:
            train_bpe([line for lines in corpus.streams.values() for line in lines], opts.vocab_size, tmp)
        publish_dir(tmp, directory)
    return len(json.load(open(os.path.join(directory, "tokenizer.json"), encoding="utf-8"))["model"]["vocab"])


def _export(params, cfg, hf_config: dict, wd: Workdir, target: str, summary: dict[str, Any]) -> None:
    """An HF checkpoint of ``params`` with the tokenizer and ``pretrain.json`` at ``target``,
    written beside it and renamed into place."""
    tmp = temp_dir_beside(target)
    try:
        inner = os.path.join(tmp, "checkpoint")
        export_hf_checkpoint(
            params, cfg, inner, hf_config=hf_config, tokenizer_dir=wd.pretrain_tokenizer, progress=False
        )
        shutil.copyfile(
            os.path.join(wd.pretrain_tokenizer, "generation_config.json"), os.path.join(inner, "generation_config.json")
        )
        write_json_atomic(os.path.join(inner, "pretrain.json"), summary)
        publish_dir(inner, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pretrain(wd: Workdir, opts: PretrainOptions, progress: bool = True, max_steps: int | None = None) -> dict[str, Any]:
    """Write the corpus and tokenizer, pretrain (resuming from ``state/`` when it holds a step),
    export the HF checkpoints; returns ``{"status": "completed" | why it stopped, ...}``.
    ``max_steps``: stop after that many steps in this call (the state is saved; a rerun resumes)."""
    t0 = time.perf_counter()
    corpus = write_corpus(opts, wd.pretrain_corpus)
    vocab_size = _tokenizer(opts, corpus, wd.pretrain_tokenizer)
    names = list(corpus.streams)
    encoded = [_encode(wd.pretrain_tokenizer, corpus.streams[n], opts.max_length) for n in names]
    streams = row_streams(corpus.weights, opts.steps * opts.batch_size)
    hf_config = opts.hf_config(vocab_size)
    cfg, init, tx, step_fn = _trainer(
        json.dumps(hf_config), opts.lr, opts.steps, opts.balance_weight, opts.z_loss_weight
    )
    params = init(jax.random.PRNGKey(opts.seed), jnp.zeros((1, 1), jnp.int32))["params"]
    state = PretrainState(np.asarray(0, np.int32), params, tx.init(params))
    manager = open_checkpoints(wd.pretrain_state)
    try:
        restored = restore_training_state(manager, state, {}, wd.pretrain_state)
        if restored is not None:
            state = restored
            logging.info(f"pretraining resumes at step {int(state.step)} ({wd.pretrain_state})")
        start = int(state.step)
        curve = [e for e in _read_curve(wd) if e["step"] < start]

        params, opt_state = state.weights, state.opt_state
        stop = opts.steps if max_steps is None else min(opts.steps, start + max_steps)
        keep = set(opts.saved_steps())
        sizes = [len(corpus.streams[n]) for n in names]

        def summary(step: int) -> dict[str, Any]:
            return {
                "options": dataclasses.asdict(opts),
                "step": step,
                "streams": {n: len(corpus.streams[n]) for n in names},
                "languages": corpus.languages,
                "tokens": int(sum(m.sum() for _, m in encoded)),
                "loss_curve": curve,
                "seconds": round(time.perf_counter() - t0, 2),
            }

        def save(step: int) -> None:
            save_training_state(manager, step, PretrainState(np.asarray(step, np.int32), params, opt_state), {})
            write_json_atomic(wd.pretrain_curve, curve)

        bar = tqdm(range(start, stop), desc="pretraining", disable=not progress, initial=start, total=opts.steps)
        for i in bar:
            rows = batch_rows(streams, sizes, i, opts.batch_size, opts.seed)
            ids = np.stack([encoded[s][0][j] for s, j in rows])
            mask = np.stack([encoded[s][1][j] for s, j in rows])
            params, opt_state, (lm, balance, z) = step_fn(params, opt_state, ids, mask)
            done = i + 1
            if i % 20 == 0 or done == opts.steps or done in keep:
                curve.append({"step": done, "lm_loss": float(lm), "balance_loss": float(balance), "z_loss": float(z)})
                bar.set_postfix(loss=f"{float(lm):.3f}")
            if done in keep:
                host = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
                _export(host, cfg, hf_config, wd, wd.pretrain_step(done), summary(done))
            if done % opts.save_every == 0 or done == stop:
                save(done)
        if stop < opts.steps:
            return {"status": f"stopped at step {stop} of {opts.steps} (max_steps); rerun to resume"}
        host = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)
        _export(host, cfg, hf_config, wd, wd.pretrain_checkpoint, summary(opts.steps))
    finally:
        manager.close()
    return {"status": "completed", "steps": opts.steps}


def _read_curve(wd: Workdir) -> list[dict[str, Any]]:
    if not os.path.isfile(wd.pretrain_curve):
        return []
    with open(wd.pretrain_curve, encoding="utf-8") as fh:
        return json.load(fh)


def read_pretraining(checkpoint: str) -> dict[str, Any] | None:
    """A checkpoint's ``pretrain.json`` (None for a checkpoint not pretrained here)."""
    path = os.path.join(checkpoint, "pretrain.json")
    return read_json_object(path, "pretraining summary") if os.path.isfile(path) else None
