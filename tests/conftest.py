import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hf_reference import make_hf_model, save_hf_model  # noqa: E402


@pytest.fixture(scope="session")
def qwen_dir(tmp_path_factory):
    """A tiny Qwen3-MoE checkpoint in hub layout."""
    return save_hf_model(make_hf_model("qwen3_moe"), str(tmp_path_factory.mktemp("qwen")))


@pytest.fixture(scope="session")
def phi_dir(tmp_path_factory):
    """A tiny PhiMoE checkpoint in hub layout."""
    return save_hf_model(make_hf_model("phimoe"), str(tmp_path_factory.mktemp("phi")))
