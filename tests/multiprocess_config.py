"""The config file the multi-process tests launch through the CLI: ``tests/multiprocess_config.py:CHECKPOINT``
is the tiny whole pipeline of ``tests/pipeline_run.py`` on a (data 2 x model 2) mesh, with a
generative task (MGSM, a few new tokens) beside perplexity so that generation is split too, and
three epochs (18 micro-steps, a checkpoint every 2) so that a kill can land inside training.

``RISE_JAX_TEST_BROKEN_PROCESS=i``: process ``i`` of the job (``JAX_PROCESS_ID``) is given a
replay data path that does not exist, as when a file is missing on one host."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixture_data import MGSM  # noqa: E402
from pipeline_run import config  # noqa: E402


def get_config(checkpoint: str):
    c = config(checkpoint)
    c.mesh.data = 2
    c.mesh.model = 2
    c.eval.run = "perplexity,mgsm"
    c.eval.variants = "base,trained"
    c.eval.languages = "bn"
    c.eval.tasks.mgsm.path = MGSM
    c.eval.tasks.mgsm.max_new_tokens = 6
    c.train.epochs = 3
    broken = os.environ.get("RISE_JAX_TEST_BROKEN_PROCESS")
    if broken is not None and broken == os.environ.get("JAX_PROCESS_ID"):
        c.data.path = os.path.join(os.path.dirname(c.data.path), "missing_on_this_host")
    return c
