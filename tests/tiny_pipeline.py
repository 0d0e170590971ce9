"""The tiny pipeline config the stage tests share: a tiny checkpoint, its Qwen3 tokenizer, three
FLoRes-200 languages of the shared data, K = 4, one short epoch."""

import os

from hf_reference import SHARED_DATA

from rise_jax.configs import base

QWEN_TOK = os.path.join(SHARED_DATA, "tokenizers", "qwen3")


def tiny_config(checkpoint: str):
    c = base.get_base_config()
    c.model.checkpoint = checkpoint
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
