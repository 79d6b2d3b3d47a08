"""Backend choice, configuration report and the extension's load rules."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import camfast
from camfast import _backend, _extension


def test_auto_prefers_the_compiled_cpu_kernels(monkeypatch):
    monkeypatch.delenv("CAMFAST_BACKEND", raising=False)
    assert _backend.resolve(None, torch.device("cpu")) == "cpp"
    assert _backend.resolve("auto", torch.device("cpu")) == "cpp"


def test_environment_variable_overrides_the_default(monkeypatch):
    monkeypatch.setenv("CAMFAST_BACKEND", "reference")
    assert _backend.resolve(None, torch.device("cpu")) == "reference"
    assert _backend.resolve("cpp", torch.device("cpu")) == "cpp"  # an explicit choice wins


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        camfast.thresholded_avg_pool2d(torch.randn(1, 1, 2, 2), backend="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a build without CUDA kernels")
def test_unavailable_backend_says_why():
    with pytest.raises(RuntimeError, match="backend='cpp' is unavailable on cuda: .*built without cuda"):
        _backend.resolve("cpp", torch.device("cuda"))


def test_torch_release_parsing_and_minimum():
    assert _extension._torch_release("2.13.0+cpu") == (2, 13)
    assert _extension._torch_release("2.11.0a0+git1234") == (2, 11)
    assert _extension._torch_release("2.10.2") < _extension.MIN_TORCH


def test_show_config_reports_versions_and_backends(capsys):
    camfast.show_config()
    # One fact a line: the name, two or more spaces, the value (names hold single spaces only).
    printed = dict(re.split(r" {2,}", line, maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert printed["camfast"] == camfast.__version__ and printed["torch (running)"] == torch.__version__
    assert "torch (built against)" in printed and "triton backend" in printed
    assert printed["cpp backend, cpu"] == "yes"


def test_import_without_the_extension_falls_back_to_the_reference(tmp_path):
    """A missing camfast._C warns once at import; every op still works through the reference."""
    code = (
        "import sys, warnings, torch\n"
        "sys.modules['camfast._C'] = None  # makes `from . import _C` fail like a missing build\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import camfast\n"
        "assert any('compiled extension is unavailable' in str(w.message) for w in caught)\n"
        "x = torch.rand(2, 3, 4, 4)\n"
        "torch.testing.assert_close(camfast.thresholded_avg_pool2d(x), camfast.reference.thresholded_avg_pool2d(x))\n"
        "print('ok')\n"
    )
    root = Path(camfast.__file__).parent.parent
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(root)})
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr
