"""The tiny pipeline config the stage tests share: a tiny checkpoint (vocabulary ``TINY_VOCAB``), the
small Qwen3-style tokenizer of tests/data (chat template included), three
FLoRes-200 languages of the test data (tests/data), K = 4, one short epoch."""

from fixture_data import FLORES, TINY_TOKENIZER

from rise_jax.configs import base


def tiny_config(checkpoint: str):
    c = base.get_base_config()
    c.model.checkpoint = checkpoint
    c.model.tokenizer = TINY_TOKENIZER
    c.model.dtype = "float32"
    c.data.path = c.train.data.path = FLORES
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


def family_pipeline_config(checkpoint: str):
    """:func:`tiny_config` through every stage a new family must pass (stats to eval), with every
    eval variant on one language's perplexity (the others add nothing at this size)."""
    c = tiny_config(checkpoint)
    c.stages = "stats,analyze,select,train,export,eval"
    c.eval.variants = "base,trained,pruned"
    c.eval.run = "perplexity"
    c.eval.languages = "bn"
    c.eval.max_samples = 2
    c.eval.progress = False
    c.eval.tasks.perplexity.path = FLORES
    c.eval.tasks.perplexity.max_length = 24
    return c
