"""Argument checks of the camfast:: ops on the Python side: csrc/common/checks.h's ArgCheck,
with the same messages, asserted with torch._check.

The fake (meta) kernels run them, so that a traced or meta call fails where an eager one would,
and so do the Triton ops, before any kernel. See csrc/common/checks.h for the contract.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._validation import FLOAT_DTYPES

ANY = None  # a size an argument may take freely


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtypes_string(dtypes: Sequence[torch.dtype]) -> str:
    names = [_dtype_name(d) for d in dtypes]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _shape_string(sizes) -> str:
    return "[" + ", ".join("*" if s is ANY else str(s) for s in sizes) + "]"


class ArgCheck:
    """The checks of one call of `op`; the anchor fixes the device of every tensor argument.

    Constructing it checks the anchor (its rank and dtype); calling it checks another argument:

        check = ArgCheck(op, x, "x", 4)
        check(grad_out, "grad_out", x.shape[:2], (x.dtype,))
    """

    def __init__(self, op: str, anchor: torch.Tensor, name: str, rank: int, dtypes=FLOAT_DTYPES):
        self.op, self.anchor_name, self.device = op, name, anchor.device
        self(anchor, name, (ANY,) * rank, dtypes)

    def __call__(self, t: torch.Tensor, name: str, sizes, dtypes) -> ArgCheck:
        op, sizes = self.op, tuple(sizes)
        torch._check(t.device == self.device, lambda: f"{op}: {name} must be on the device of {self.anchor_name} "
                                                      f"({self.device}), got {t.device}")

        def shape_message():
            if all(s is ANY for s in sizes):
                return f"{op}: {name} must be {len(sizes)}-D, got {t.dim()}-D"
            return f"{op}: {name} must have shape {_shape_string(sizes)}, got {_shape_string(t.shape)}"

        torch._check(t.dim() == len(sizes), shape_message)
        for actual, size in zip(t.shape, sizes):
            if size is not ANY:  # one torch._check per size: a symbolic size becomes a runtime assert
                torch._check(actual == size, shape_message)
        torch._check(t.dtype in dtypes, lambda: f"{op}: {name} must be {_dtypes_string(dtypes)}, "
                                                f"got {_dtype_name(t.dtype)}")
        return self
