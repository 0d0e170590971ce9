"""Run a tiny whole pipeline in its own process: ``python tests/pipeline_run.py CHECKPOINT WORKDIR``.

Used by the fault-injection test (tests/test_pipeline.py), which kills this process at random
moments and reruns it. Tiny Qwen3-MoE, three FLoRes languages, every stage but inspect.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_data import FLORES
from tiny_pipeline import tiny_config  # noqa: E402

from rise_jax import launch  # noqa: E402


def config(checkpoint: str):
    """The shared tiny config, run through every stage but inspect, with eval and frequent checkpoints."""
    c = tiny_config(checkpoint)
    c.stages = "stats,analyze,select,train,export,eval,report"
    c.analyze.global_top_n = 8
    c.train.epochs = 2
    c.train.save_every = 2
    c.eval.variants = "base,trained,pruned"
    c.eval.run = "perplexity"
    c.eval.languages = "en,bn,sw"
    c.eval.max_samples = 4
    c.eval.progress = False
    c.eval.tasks.perplexity.path = FLORES
    c.eval.tasks.perplexity.split = "dev"
    c.eval.tasks.perplexity.max_length = 40
    return c


if __name__ == "__main__":
    launch.run(config(sys.argv[1]), sys.argv[2])
