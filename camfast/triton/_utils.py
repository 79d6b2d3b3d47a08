"""Launch helpers and the tile sum shared by the Triton kernels.

Sums: every kernel adds up a row (or a pixel's channels) tile by tile, and both the sum of each
tile and the running total across tiles are float64 (tile_sum, SUM). A float32 running total
drifts with the number of tiles (4e-7 of a TAP mean over a 1024 x 1024 map, 60x eager's error);
a float32 tile sum is a tree on a GPU but a sequential loop of up to 1024 adds under the
interpreter (NumPy reduces a non-contiguous axis row by row), which alone put GGAM's gradients
at 3x eager's error. In float64 the result no longer depends on how tl.sum is lowered. The cost is
one conversion and one float64 add per element inside the reduction: these kernels move each
element once from memory, and float64 adds run at half the float32 rate on A100/H100 (about 40x
the rate those elements arrive), so none is expected to show; not measured (no GPU). Totals are
rounded to the accumulation type once, before any elementwise use, so no float64 arithmetic runs
per element outside the sums.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import channels_inner

# The type of every tile sum and running total (see the module docstring).
SUM = tl.constexpr(tl.float64)


@triton.jit
def tile_sum(v, axis: tl.constexpr):
    """The sum of a tile along axis, in float64 (see the module docstring)."""
    return tl.sum(v.to(tl.float64), axis=axis)


@triton.jit
def round_to(x, dtype: tl.constexpr):
    """x rounded to dtype to nearest, ties to even, as torch and a GPU's conversion round.

    The interpreter's float32 -> bfloat16 conversion truncates instead, and gets subnormals wrong
    (triton 3.6, runtime/interpreter.py: cast_impl passes no rounding mode to _convert_float).
    That puts a map or a threshold one unit below torch's and moves pixels across a threshold
    test, so bfloat16 is built here from the bits of the float32: its upper half, rounded by
    adding half a unit (ties to the even one); NaN stays NaN.
    """
    if dtype == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        upper = tl.where(x != x, (bits >> 16) | 0x40, (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16)
        y = upper.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        y = x.to(dtype)
    return y


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
