import os

import torch

# Triton reads TRITON_INTERPRET when a kernel is decorated, so it must be set before camfast's
# Triton modules are imported: without a GPU, Triton kernels run in the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
