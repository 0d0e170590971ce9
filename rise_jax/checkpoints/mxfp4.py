"""MXFP4 expert weights (GPT-OSS hub checkpoints): dequantise ``*_blocks`` + ``*_scales``.

Layout (OCP microscaling FP4, as transformers reads it): ``blocks`` uint8 ``[..., R, G, 16]``
holds 32 FP4 (E2M1) values per group of ``G`` (two per byte, low nibble first), ``scales`` uint8
``[..., R, G]`` a shared power-of-two exponent per group, biased by 127. The value is
``FP4[nibble] · 2^(scale − 127)``, giving ``[..., R, 32·G]``, then the last two axes are swapped
(``[E, 2I, H]`` blocks -> ``[E, H, 2I]``, the in-memory ``gate_up_proj``).

Bit-identical to ``transformers.integrations.mxfp4.convert_moe_packed_tensors``: the FP4 value
times the fp32 power of two is exact in fp32 (``ldexp`` there multiplies by ``2.0 ** exp`` in
fp32), and rounding to the target dtype happens once, afterwards.
"""

from __future__ import annotations

import numpy as np

FP4_VALUES = np.asarray(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], np.float32
)
BLOCKS_SUFFIX, SCALES_SUFFIX = "_blocks", "_scales"


def dequantized_shape(blocks_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``[..., R, G, B]`` -> ``[..., 2·B·G, R]`` (after the final transpose)."""
    *prefix, rows, groups, width = blocks_shape
    return (*prefix, groups * width * 2, rows)


def dequantize(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """fp32 ``[..., 32·G, R]`` from ``blocks`` ``[..., R, G, 16]`` and ``scales`` ``[..., R, G]``."""
    if blocks.dtype != np.uint8 or scales.dtype != np.uint8:
        raise ValueError(f"MXFP4 blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.shape[:-1] != scales.shape:
        raise ValueError(f"MXFP4 blocks {list(blocks.shape)} do not match scales {list(scales.shape)}")
    *prefix, rows, groups, width = blocks.shape
    values = np.empty((*prefix, rows, groups, width * 2), np.float32)
    values[..., 0::2] = FP4_VALUES[blocks & 0x0F]
    values[..., 1::2] = FP4_VALUES[blocks >> 4]
    with np.errstate(over="ignore", invalid="ignore"):
        power = np.ldexp(np.float32(1.0), scales.astype(np.int32) - 127).astype(np.float32)
        values *= power[..., None]
    return np.swapaxes(values.reshape(*prefix, rows, groups * width * 2), -1, -2)
