"""Large CPU outputs (32 MB and more) come from a pool of freed outputs (csrc/common/memory.h)."""

import pytest
import torch

import camfast
from camfast import reference

# 2 x 64 x 256 x 256 float32: 32 MiB, the first size the pool serves.
SHAPE = (2, 64, 256, 256)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_pooled_outputs_are_right_laid_out_and_reused(memory_format):
    x = torch.randn(SHAPE).contiguous(memory_format=memory_format)
    first = camfast.spatial_softmax2d(x, backend="cpp")
    second = camfast.spatial_softmax2d(x, backend="cpp")
    # Two live outputs never share memory, and each has torch's layout for x.
    assert first.data_ptr() != second.data_ptr()
    assert first.stride() == torch.empty_like(x).stride()
    torch.testing.assert_close(first, reference.spatial_softmax2d(x))
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    # A freed output's memory serves the next output of its size, and is written anew.
    freed = first.data_ptr()
    del first
    third = camfast.spatial_softmax2d(2 * x, backend="cpp")
    assert third.data_ptr() == freed
    torch.testing.assert_close(third, reference.spatial_softmax2d(2 * x))


def test_pooled_outputs_behave_as_tensors():
    """Gradients, copies and in-place updates of pooled outputs work as on any tensor."""
    x = torch.randn(SHAPE, requires_grad=True)
    out = camfast.adl(x, use_drop=False, backend="cpp")
    out.backward(torch.ones_like(out))
    expected = x.detach().clone().requires_grad_()
    reference.adl(expected, torch.zeros(SHAPE[0], dtype=torch.bool)).backward(torch.ones_like(out))
    torch.testing.assert_close(x.grad, expected.grad)
    kept = out.detach().clone()
    out.detach().mul_(2)
    torch.testing.assert_close(out.detach(), 2 * kept)
