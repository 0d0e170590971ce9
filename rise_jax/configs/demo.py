"""The embedded demo: a small Qwen3-MoE pretrained here from scratch, then the whole pipeline.

    python -m rise_jax.launch --config=configs/demo.py --workdir=/tmp/rise_demo

The project's own six-language parallel corpus (rise_jax/demo/corpus.py: en es ru zh high-resource,
bn sw low-resource) trains a byte-level BPE tokenizer and an 8-layer x 16-expert Qwen3-MoE in JAX;
this is the pipeline's first stage, `pretrain` (fingerprinted and resumable like every stage), which
saves it as an ordinary HF checkpoint in <workdir>/pretrain/checkpoint; it then goes through
stats -> analyze -> task_experts -> select (RISE, target Bengali) -> train -> export -> eval ->
arms -> correlate -> report exactly as a real checkpoint does. The companion study's parts run too:
divergence from English by zone, routing entropy and consistency, task vs multilingual experts
on the corpus' task set (English sums in words, `<corpus>/task/en.txt`), one `steered` variant
(the task experts of the middle zone promoted) and the correlation of per-language perplexity
with middle-layer divergence; and the routing-alignment comparison (stage arms: RISE,
RISE + the alignment term, the routers + the term, steering). `configs/demo.py:test` is a smaller, faster variant for the test
suite.
"""

from rise_jax.configs.base import get_base_config

CORPUS = "{workdir}/pretrain/corpus"


def get_config(arg: str = ""):
    size = arg or "full"
    if size not in ("full", "test"):
        raise ValueError(f"configs/demo.py takes 'full' (default) or 'test', got {arg!r}")
    test = size == "test"
    c = get_base_config()
    c.seed = 0
    c.stages = "pretrain,stats,analyze,task_experts,select,train,export,eval,arms,correlate,report"
    c.model.checkpoint = "{workdir}/pretrain/checkpoint"
    c.model.dtype = "float32"

    # Pretraining of the demo model (stage pretrain: rise_jax/testbed/pretrain.py, PretrainOptions):
    # configs/base.py's pretrain section is the demo's model and schedule (the demo corpus, 8 layers
    # x 16 experts top-4, 300 steps); the test size pretrains for fewer steps.
    if test:
        c.pretrain.steps = 120

    c.data.source = "plain_text"
    c.data.path = CORPUS + "/dev"
    c.data.parallel = True
    c.data.languages = "en,es,ru,zh,bn,sw"
    c.data.max_length = 64
    c.stats.batch_size = 16

    c.analyze.reference = "en"
    c.analyze.global_top_n = 12

    # The companion study's task experts: the corpus' task set (English sums in words) against
    # English general text. The toy model's activation differences are small, hence low taus.
    c.task_experts.data.source = "plain_text"
    c.task_experts.data.path = CORPUS + "/task"
    c.task_experts.data.max_samples = 0
    c.task_experts.data.max_length = 64
    c.task_experts.language = "en"
    c.task_experts.taus = "0.02,0.05,0.1,0.2,0.3"

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

    c.eval.variants = "base,trained,pruned,steered"
    # The study's steering on the demo: soft-promote the task experts (tau 0.05) in the middle
    # zone (MoE layers 3-4 of 8 with the default zone ratios).
    c.eval.steer.source = "task_experts"
    c.eval.steer.tau = 0.05
    c.eval.steer.layers = "3-4"
    c.eval.steer.mode = "soft"
    c.eval.steer.strength = 0.5
    c.eval.run = "perplexity,global_piqa,flores_en_xx,flores_xx_en,routing_divergence"
    c.eval.languages = "en,es,ru,zh,bn,sw"
    c.eval.tasks.perplexity.source = "plain_text"
    c.eval.tasks.perplexity.path = CORPUS + "/test"
    c.eval.tasks.perplexity.max_length = 64
    # A multilingual multiple-choice task in a published format: the corpus' cloze items as
    # Global-PIQA rows (rise_jax/demo/corpus.py: cloze_rows), scored as lm-eval scores global_piqa.
    c.eval.tasks.global_piqa.path = CORPUS + "/global_piqa/{lang}.jsonl"
    c.eval.tasks.global_piqa.max_samples = 16 if test else 0
    # Translation both ways with English on the parallel test split (line i of every file is one
    # sentence), with the prompt of configs/base.py; chrF++ / BLEU from sacrebleu.
    for name in ("flores_en_xx", "flores_xx_en"):
        task = c.eval.tasks[name]
        task.source = "plain_text"
        task.path = CORPUS + "/test"
        task.languages = "es,zh,bn,sw"
        task.template = "raw"  # the demo model has no chat template
        task.max_new_tokens = 24
        task.max_samples = 4 if test else 32
    # Bengali's middle-layer routing divergence from English on the parallel test split, for
    # every variant: how far training and steering moved its routing.
    c.eval.tasks.routing_divergence.source = "plain_text"
    c.eval.tasks.routing_divergence.path = CORPUS + "/test"
    c.eval.tasks.routing_divergence.languages = "bn"
    c.eval.tasks.routing_divergence.max_length = 64
    c.eval.progress = False

    # Does aligning the router add to RISE, replace it, or hurt it? The sweep routing_alignment's
    # arms beside this run (which is its RISE arm, steering included): RISE + the alignment term,
    # and the middle-zone routers + the term, trained on the same selection and data
    # (stage arms, rise_jax/stages/arms.py); the report's comparison table.
    c.arms.sweep = "routing_alignment"
    c.arms.eval_run = "perplexity,routing_divergence"

    c.correlate.tasks = "perplexity"  # per-language perplexity vs mean middle-layer divergence
    return c
