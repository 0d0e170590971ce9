"""The controlled testbed: a small MoE pretrained here on cipher languages of one base corpus.

    python -m rise_jax.launch --config=configs/testbed.py --workdir=/tmp/testbed
    python -m rise_jax.study --config=configs/testbed.py --sweep=testbed_imbalance --workdir=/tmp/study

Five synthetic languages with known ground truth (rise_jax/testbed/ciphers.py), all the demo
corpus's English sentences word for word: `qaa` is the base itself, `qab` and `qac` are full
ciphers (disjoint vocabularies), `qad` and `qae` keep half of the base vocabulary (partial
ciphers). `qab` and `qad` are as frequent in the pretraining mix as the base; `qac` and `qae` are
100x rarer (`pretrain.mix`), so resource share and vocabulary overlap vary independently. The
`pretrain` stage saves HF checkpoints at `pretrain.save_steps`; `launch` analyses the last one,
`rise_jax.study` runs `study.stages` on every saved one and reports overlap with the base over
steps, the divergence curve across depth and RISE's selection for `select.target`.
`configs/testbed.py:test` is a tiny variant for the test suite.
"""

from rise_jax.configs.base import get_base_config

CORPUS = "{workdir}/pretrain/corpus"


def get_config(arg: str = ""):
    size = arg or "full"
    if size not in ("full", "test"):
        raise ValueError(f"configs/testbed.py takes 'full' (default) or 'test', got {arg!r}")
    test = size == "test"
    c = get_base_config()
    c.seed = 0
    c.stages = "pretrain,stats,analyze,select,report"
    c.model.checkpoint = "{workdir}/pretrain/checkpoint"
    c.model.dtype = "float32"

    p = c.pretrain
    p.corpus = "cipher"
    p.languages = "qaa,qab,qac" if test else "qaa,qab,qac,qad,qae"
    p.shared = "1,0,0.5" if test else "1,0,0,0.5,0.5"
    p.mix = "10,10,1" if test else "100,100,1,100,1"
    p.num_layers = 4 if test else 8
    p.num_experts = 4 if test else 16
    p.top_k = 2 if test else 4
    p.hidden_size = 16 if test else 64
    p.moe_intermediate_size = 16 if test else 48
    p.steps = 6 if test else 400
    p.batch_size = 8 if test else 32
    p.max_length = 16
    p.lr = 3e-3
    p.balance_weight = 0.0025
    p.z_loss_weight = 0.0
    p.save_steps = "3,6" if test else "25,50,100,200,400"
    p.save_every = 3 if test else 100
    p.seed = 0

    c.data.source = "plain_text"
    c.data.path = CORPUS + "/dev"
    c.data.parallel = True
    c.data.languages = p.languages
    c.data.max_length = 16
    c.data.max_samples = 16 if test else 0
    c.stats.batch_size = 16

    c.analyze.reference = "qaa"
    c.analyze.low_resource = "qac" if test else "qac,qae"
    c.analyze.global_top_n = 4 if test else 32  # a quarter of the (layer, expert) pairs

    c.select.target = "qac"
    c.select.k = 4 if test else 16

    # The study over checkpoints (rise_jax/study.py): the stages run on every saved step, and the
    # overlap level whose crossing it reports (Jaccard of the global top-N with the reference).
    c.study.stages = "stats,analyze,select"
    c.study.overlap_level = 0.5
    return c
