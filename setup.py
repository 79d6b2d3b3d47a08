"""Build camfast._C against the torch that is already installed.

Always builds the C++ CPU kernels. Adds the CUDA kernels when the installed torch is a CUDA build and
nvcc is found (or CAMFAST_CUDA=1 forces it; CAMFAST_CUDA=0 turns it off). Every source uses only the
LibTorch stable ABI, so one abi3 wheel serves torch 2.11 and newer (see docs/design.md).

Knobs: CAMFAST_CUDA, CAMFAST_CUDA_ARCHS (default "80;90"), CAMFAST_DEBUG, MAX_JOBS, and
CAMFAST_SANITIZE=1: the CPU kernels under AddressSanitizer and UndefinedBehaviorSanitizer (`make
sanitize` builds that into build/sanitize and runs the op tests against it).
Build with --no-build-isolation so the installed torch is used.
"""

import glob
import os

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

# The oldest torch whose stable ABI the binary may use; torch >= 2.11 loads the same .so.
TORCH_TARGET_VERSION = "0x020b000000000000"


def _cuda_wanted() -> bool:
    forced = os.environ.get("CAMFAST_CUDA")
    if forced is not None:
        return forced == "1"
    return torch.version.cuda is not None and CUDA_HOME is not None


def _cuda_archs() -> list[str]:
    archs = os.environ.get("CAMFAST_CUDA_ARCHS", "80;90")
    return [a.strip() for a in archs.replace(",", ";").split(";") if a.strip()]


def _gencode_flags(archs: list[str]) -> list[str]:
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    # PTX of the newest arch lets future GPUs JIT the kernels.
    flags.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
    return flags


# Any report aborts the process, so that a test run fails on it.
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]


def _extension():
    debug = os.environ.get("CAMFAST_DEBUG") == "1"
    sanitize = os.environ.get("CAMFAST_SANITIZE") == "1"
    opt = ["-O1", "-g", *SANITIZE_FLAGS] if sanitize else ["-O0", "-g"] if debug else ["-O3"]
    with_cuda = _cuda_wanted() and not sanitize
    archs = _cuda_archs() if with_cuda else []
    defines = [
        f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}",
        f'-DCAMFAST_BUILT_TORCH="{torch.__version__.split("+")[0]}"',
        f'-DCAMFAST_CUDA_ARCHS="{";".join(archs)}"',
    ]
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-std=c++17", "-fvisibility=hidden", "-fopenmp-simd", *opt, *defines]
    print(f"camfast: building {'CPU + CUDA ' + ';'.join(archs) if with_cuda else 'CPU only'}")
    if not with_cuda:
        return CppExtension("camfast._C", sources, extra_compile_args={"cxx": cxx},
                            extra_link_args=SANITIZE_FLAGS if sanitize else [], py_limited_api=True)
    nvcc = ["-std=c++17", "--expt-relaxed-constexpr", "-lineinfo", *opt, *defines, "-DUSE_CUDA",
            *_gencode_flags(archs)]
    return CUDAExtension(
        "camfast._C",
        sources + sorted(glob.glob("csrc/cuda/*.cu")),
        extra_compile_args={"cxx": [*cxx, "-DUSE_CUDA"], "nvcc": nvcc},
        py_limited_api=True,
    )


setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
