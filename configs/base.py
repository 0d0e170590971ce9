"""Fields shared by every config; model configs start from :func:`get_base_config`."""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 42
    c.stages = "inspect"  # comma-separated, run in order

    c.model = ml_collections.ConfigDict()
    c.model.checkpoint = ""  # HF checkpoint directory or hub id
    c.model.demo = False  # build and use the small demo checkpoint instead
    c.model.dtype = "bfloat16"  # parameter dtype: bfloat16 | float32
    c.model.dispatch = "auto"  # MoE dispatch: auto | ragged | sorted_scan | dense

    c.inspect = ml_collections.ConfigDict()
    c.inspect.load_weights = True  # load (and so validate) every tensor
    c.inspect.save_params = False  # also save the converted params with orbax to <workdir>/params
    return c
