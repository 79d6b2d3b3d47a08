"""Launch helpers shared by the Triton kernels."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import channels_inner

# Elements one program holds per tile: 16-32 values per thread at 4 warps, no spills.
TILE_ELEMENTS = 4096


def acc_dtype(dtype: torch.dtype):
    """Accumulation type: float64 for float64 inputs, float32 otherwise."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def row_tiles(x: torch.Tensor) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P) for kernels that reduce each (n, c) row of an [N, C, P] view.

    Rows of a channels_last tensor are strided by 1 across channels, so a tile spans many
    channels and few pixels there; in NCHW a tile spans whole rows.
    """
    c, p = x.shape[1], x.shape[2] * x.shape[3]
    block_p = min(triton.next_power_of_2(max(p, 1)), 64 if channels_inner(x) else 1024)
    block_c = max(1, min(TILE_ELEMENTS // block_p, triton.next_power_of_2(max(c, 1))))
    return block_c, block_p


def pixel_tiles(x: torch.Tensor) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P) for kernels that reduce over the channels of each pixel of [N, C, P].

    A program owns BLOCK_P pixels and loops over the channels BLOCK_C at a time: wide in P for
    NCHW (pixels contiguous), wide in C for channels_last.
    """
    c, p = x.shape[1], x.shape[2] * x.shape[3]
    if channels_inner(x):
        block_c = min(triton.next_power_of_2(max(c, 1)), 128)
        return block_c, max(1, min(TILE_ELEMENTS // 4 // block_c, triton.next_power_of_2(p)))
    block_p = min(triton.next_power_of_2(max(p, 1)), 256)
    return max(1, min(TILE_ELEMENTS // 4 // block_p, triton.next_power_of_2(max(c, 1)))), block_p
