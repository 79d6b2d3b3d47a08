"""Large CPU outputs (32 MB and more) come from a pool of freed outputs (csrc/common/memory.h).

The pool is Linux-only; elsewhere these outputs come from torch's allocator and only the value
checks below apply.
"""

import copy
import io
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import camfast
from camfast import reference

# 2 x 64 x 256 x 256 float32: 32 MiB, the first size the pool serves.
SHAPE = (2, 64, 256, 256)
MIB = 2**20
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pool is Linux-only")


def softmax(x):
    return camfast.spatial_softmax2d(x, backend="cpp")


@linux_only
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_pooled_outputs_are_right_laid_out_and_reused(memory_format):
    x = torch.randn(SHAPE).contiguous(memory_format=memory_format)
    first = softmax(x)
    second = softmax(x)
    # Two live outputs never share memory, and each has torch's layout for x.
    assert first.data_ptr() != second.data_ptr()
    assert first.stride() == second.stride() == torch.empty_like(x).stride()
    assert first.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(first, reference.spatial_softmax2d(x))
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    # A freed output's memory serves the next output of its size, and is written anew.
    freed = first.data_ptr()
    del first
    third = softmax(2 * x)
    assert third.data_ptr() == freed
    torch.testing.assert_close(third, reference.spatial_softmax2d(2 * x))


def test_pooled_output_gradients_match_the_reference():
    """ADL's forward output and backward gradient are both pooled sizes."""
    x = torch.randn(SHAPE, requires_grad=True)
    out = camfast.adl(x, use_drop=False, backend="cpp")
    grad = torch.randn(SHAPE)
    out.backward(grad)
    expected = x.detach().clone().requires_grad_()
    reference.adl(expected, torch.zeros(SHAPE[0], dtype=torch.bool)).backward(grad)
    torch.testing.assert_close(out.detach(), reference.adl(x.detach(), torch.zeros(SHAPE[0], dtype=torch.bool)))
    torch.testing.assert_close(x.grad, expected.grad)


def _saved_and_loaded(t):
    buffer = io.BytesIO()
    torch.save(t, buffer)
    buffer.seek(0)
    return torch.load(buffer)


def _shared(t):
    return t.share_memory_()  # what a data loader worker does with the tensors it returns


@pytest.mark.parametrize("round_trip", [lambda t: pickle.loads(pickle.dumps(t)),
                                        copy.deepcopy, _saved_and_loaded, _shared, lambda t: t.mul_(2).div_(2)],
                         ids=["pickle", "deepcopy", "save-load", "share_memory", "in-place"])
def test_pooled_outputs_behave_as_tensors(round_trip):
    x = torch.randn(SHAPE).contiguous(memory_format=torch.channels_last)
    out = softmax(x)
    expected = out.clone()
    copied = round_trip(out)
    assert copied.stride() == expected.stride()
    torch.testing.assert_close(copied, expected, rtol=0, atol=0)
    del out  # the pooled mapping goes back to the pool; the copy keeps its values
    softmax(-x)
    torch.testing.assert_close(copied, expected, rtol=0, atol=0)


@linux_only
def test_outputs_allocated_and_freed_on_several_threads():
    """Ops run outside the GIL and tensors are freed on any thread: no two live outputs share a mapping."""
    x = torch.randn(SHAPE)
    expected = softmax(x)
    failures = []

    def work():
        try:
            for _ in range(6):
                kept = [softmax(x), softmax(x)]
                assert kept[0].data_ptr() != kept[1].data_ptr()
                for out in kept:
                    assert torch.equal(out, expected)
        except AssertionError as error:  # reported from the main thread
            failures.append(error)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


@linux_only
def test_forked_children_use_the_pool_while_a_thread_does():
    """A child forked while another thread takes and returns pooled outputs (as a data loader's
    workers are) gets the pool unlocked: it reuses the parent's freed output and exits."""
    x = torch.randn(SHAPE)
    pooled = softmax(x)
    expected = pooled.clone()
    del pooled  # a freed output the children inherit
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            softmax(x)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for _ in range(8):
            pid = os.fork()
            if pid == 0:  # the child: no pytest machinery, only the exit status
                torch.set_num_threads(1)  # as a data loader's worker does: OpenMP does not survive fork
                ok = all(torch.equal(softmax(x), expected) for _ in range(2))
                os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        thread.join()


def _run(code: str, pool_mb: str | None) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(Path(camfast.__file__).parent.parent), "PATH": os.environ.get("PATH", "")}
    if pool_mb is not None:
        env["CAMFAST_CPU_OUTPUT_POOL_MB"] = pool_mb
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def _pool_check(pool_mb: str | None) -> tuple[float, bool, bool]:
    """MB unmapped by freeing two 32 MiB outputs; whether the last freed one serves the next
    output; whether pooled storage is resizable (pooled storage is not)."""
    code = f"""
import torch, camfast

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * {os.sysconf("SC_PAGE_SIZE")} / 2**20

x = torch.randn{SHAPE}  # 32 MiB
a, b = (camfast.spatial_softmax2d(x, backend="cpp") for _ in range(2))
kept = b.data_ptr()
before = rss_mb()
del a, b
unmapped = before - rss_mb()
c = camfast.spatial_softmax2d(x, backend="cpp")
reused = c.data_ptr() == kept
torch.testing.assert_close(c, camfast.reference.spatial_softmax2d(x))
try:
    c.untyped_storage().resize_(0)
    resizable = True
except RuntimeError:
    resizable = False
print(unmapped, reused, resizable)
"""
    run = _run(code, pool_mb)
    assert run.returncode == 0, run.stderr
    unmapped, reused, resizable = run.stdout.split()
    return float(unmapped), reused == "True", resizable == "True"


@linux_only
def test_pool_keeps_freed_outputs_up_to_its_cap():
    # Default cap (1 GiB): both freed outputs stay mapped, the last freed serves the next call.
    unmapped, reused, resizable = _pool_check(None)
    assert unmapped < 8 and reused and not resizable
    # 40 MB holds one 32 MiB output: freeing the second unmaps the first.
    unmapped, reused, resizable = _pool_check("40")
    assert 30 < unmapped < 40 and reused and not resizable
    # Below the output's size, or 0: no pool, torch's allocator (its storage resizes).
    for off in ("0", "16"):
        unmapped, reused, resizable = _pool_check(off)
        assert unmapped > 60 and resizable, off


@linux_only
def test_bad_pool_size_is_a_clear_error():
    code = "import torch, camfast\ncamfast.spatial_softmax2d(torch.randn(2, 64, 256, 256), backend='cpp')"
    for bad in ("-1", "lots", "12MB"):
        run = _run(code, bad)
        assert run.returncode != 0 and "CAMFAST_CPU_OUTPUT_POOL_MB: expected a whole number of MB" in run.stderr, bad
