"""The embedded demo: a small Qwen3-MoE pretrained here from scratch, then the whole pipeline.

    python -m rise_jax.launch --config=configs/demo.py --workdir=/tmp/rise_demo

The project's own six-language parallel corpus (rise_jax/demo/corpus.py: en es ru zh high-resource,
bn sw low-resource) trains a byte-level BPE tokenizer and an 8-layer x 16-expert Qwen3-MoE in JAX;
it is saved as an ordinary HF checkpoint in <workdir>/demo/checkpoint and then goes through
stats -> analyze -> select (RISE, target Bengali) -> train -> export -> eval -> report exactly as a
real checkpoint does. `configs/demo.py:test` is a smaller, faster variant for the test suite.
"""

import ml_collections

from rise_jax.configs.base import get_base_config

CORPUS = "{workdir}/demo/corpus"


def get_config(arg: str = ""):
    size = arg or "full"
    if size not in ("full", "test"):
        raise ValueError(f"configs/demo.py takes 'full' (default) or 'test', got {arg!r}")
    test = size == "test"
    c = get_base_config()
    c.seed = 0
    c.model.demo = True
    c.model.checkpoint = "{workdir}/demo/checkpoint"
    c.model.dtype = "float32"

    # Pretraining of the demo model (rise_jax/demo/pretrain.py, PretrainOptions).
    c.demo = ml_collections.ConfigDict()
    c.demo.num_layers = 8
    c.demo.num_experts = 16
    c.demo.top_k = 4
    c.demo.hidden_size = 64
    c.demo.moe_intermediate_size = 48
    c.demo.vocab_size = 768
    c.demo.steps = 120 if test else 300
    c.demo.batch_size = 32
    c.demo.lr = 3e-3
    c.demo.seed = 0

    c.data.source = "plain_text"
    c.data.path = CORPUS + "/dev"
    c.data.parallel = True
    c.data.languages = "en,es,ru,zh,bn,sw"
    c.data.max_length = 64
    c.stats.batch_size = 16

    c.analyze.reference = "en"
    c.analyze.global_top_n = 12

    c.select.target = "bn"
    c.select.k = 16
    c.select.ratios = (0.35, 0.25, 0.40)

    c.train.data.source = "plain_text"
    c.train.data.path = CORPUS + "/train"
    c.train.data.max_length = 64
    c.train.held_out = 0.1
    c.train.epochs = 1 if test else 3
    c.train.batch_size = 8
    c.train.grad_accum = 1
    c.train.lr = 3e-3
    c.train.warmup_ratio = 0.05
    c.train.eval_every = 10
    c.train.save_every = 50
    c.train.remat = False

    c.eval.variants = "base,trained,pruned"
    c.eval.run = "perplexity"
    c.eval.languages = "en,es,ru,zh,bn,sw"
    c.eval.tasks.perplexity.source = "plain_text"
    c.eval.tasks.perplexity.path = CORPUS + "/test"
    c.eval.tasks.perplexity.max_length = 64
    c.eval.progress = False
    return c
