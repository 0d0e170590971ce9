"""The config file the multi-process tests launch through the CLI: ``tests/multiprocess_config.py:CHECKPOINT``
is the tiny whole pipeline of ``tests/pipeline_run.py`` on a (data 2 x model 2) mesh, with a
generative task (MGSM, a few new tokens) beside perplexity so that generation is split too."""

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
    c.eval.languages = "en,bn"
    c.eval.tasks.mgsm.path = MGSM
    c.eval.tasks.mgsm.max_new_tokens = 6
    return c
