"""The Triton kernels round to the input dtype as torch does, under the interpreter as on a GPU."""

import pytest
import torch

from camfast_testing.checks import compiled_backends

if not any(p.values[1] == "triton" for p in compiled_backends()):
    pytest.skip("Triton is not usable here", allow_module_level=True)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from camfast.triton._utils import round_to  # noqa: E402


@triton.jit
def _round_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    ps = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(x_ptr + ps, mask=ps < n)
    tl.store(out_ptr + ps, round_to(v, out_ptr.dtype.element_ty), mask=ps < n)


def float32_cases() -> torch.Tensor:
    """Random bit patterns, halfway ties of a bfloat16 unit (both signs, odd and even), values that
    carry into the exponent, subnormals, the largest finite values (which round to inf), zeros,
    infinities and NaN."""
    random = torch.randint(0, 1 << 16, (4096,), dtype=torch.int32) << 16 | torch.randint(0, 1 << 16, (4096,), dtype=torch.int32)
    ties = torch.arange(4096, dtype=torch.int32) << 16 | 0x8000
    bits = torch.cat([random, ties, ties | (1 << 31), torch.tensor([0x7F7FFFFF, 0x007FFFFF, 1, 0x3F7FFFFF])])
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 65519.0, 65520.0])
    return torch.cat([bits.view(torch.float32), special])


@pytest.mark.triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_round_to_is_torchs_conversion(dtype):
    x = float32_cases().to("cuda" if torch.cuda.is_available() else "cpu")
    actual = torch.empty(x.shape, dtype=dtype, device=x.device)
    _round_kernel[(triton.cdiv(x.numel(), 1024),)](x, actual, x.numel(), BLOCK=1024)
    expected = x.to(dtype)
    nan = expected.isnan()
    assert torch.equal(actual.isnan(), nan)
    same_bits = torch.int32 if dtype == torch.float32 else torch.int16
    assert torch.equal(actual[~nan].view(same_bits), expected[~nan].view(same_bits))
