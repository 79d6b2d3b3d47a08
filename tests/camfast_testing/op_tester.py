"""The tests every op gets, written once (as torchvision's RoIOpTester and kornia's BaseTester).

Each tests/test_<op>.py subclasses OpTester (forward-only ops) or LayerOpTester (differentiable
layers) in a class named Test<Op>, and supplies

    op                      the stem: camfast.<op>, camfast.reference.<op>, torch.ops.camfast.<op>
    inputs(shape, dtype, device, layout)
                            the op's tensor arguments for one shape, in one of checks.LAYOUTS
    op_args(*inputs)        argument tuples for the compiled op torch.ops.camfast.<op>[_triton]

and, where the defaults below do not fit,

    options(*inputs)        keyword variants compared on random inputs (tau=..., spatial=...)
    compile_options(*inputs)          the variant torch.compile is checked with (the first)
    gradcheck_options(*inputs)        LayerOpTester: the variants gradcheck runs (all by default)
    call(backend, *inputs, **options)  camfast.<op>(*inputs, backend=backend, **options)
    ref(*inputs, **options)            camfast.reference.<op>(*inputs, **options)
    output_shape(shape)     the output's shape for an input shape (the input's by default)
    shapes, large_shapes, small_shape, empty_shapes, long_sums
    bad_inputs              (make, error, message): make() returns bad positional arguments
    bad_options             (kwargs, error, message): valid tensors, bad keyword arguments

In return it runs, on every compiled backend (and on the reference where that says something):
forward and backward against the reference over dtypes x shapes x layouts, empty batch and
channels, gradcheck in float64, torch.library.opcheck, torch.compile(fullgraph=True), inputs left
unmodified, the same error for bad input on every backend (the first tensor argument's type,
dtype, rank and empty-map checks come for free), and for a forward-only op a backward that raises.

A subclass keeps only what is particular to its op: edge values, the authors' oracles, module
tests. For those, `self.assert_matches_reference(backend, *inputs, **options)` is the one-line
comparison, `self.compiled_op(backend)` the torch.ops op, and `every_backend` the decorator.
`all_op_testers()` gives one instance of every op's tester, for checks that run across all ops.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

import camfast
from camfast import _backend, reference

from . import checks

BACKENDS = checks.compiled_backends()
# The reference backend too, where running it checks something of its own (shapes, no mutation).
WITH_REFERENCE = [pytest.param("cpu", "reference", id="cpu-reference"), *BACKENDS]
# Argument checks run before any device work: one CPU call per backend name.
BACKEND_NAMES = ["reference", *[p.values[1] for p in BACKENDS]]

# For a subclass's own tests, as for the shared ones.
every_backend = pytest.mark.parametrize("device,backend", BACKENDS)
every_backend_and_reference = pytest.mark.parametrize("device,backend", WITH_REFERENCE)

_TESTERS: dict[str, type] = {}


def all_op_testers() -> list:
    """One instance of every op's tester: tests/test_<op>.py for every op in camfast.reference."""
    for name in reference.__all__:
        importlib.import_module(f"test_{name}")
    return [_TESTERS[name]() for name in reference.__all__]


class OpTester:
    """The tests of a forward-only op; LayerOpTester adds what a differentiable op needs."""

    op: str
    # Odd sizes and 1x1 maps, on every backend.
    shapes: tuple = ((2, 5, 7, 9), (1, 3, 1, 1))
    # Added on the C++ backend only: the Triton interpreter runs one program at a time on CPU.
    large_shapes: tuple = ((3, 70, 14, 14),)
    # gradcheck, opcheck, torch.compile and the unmodified-input check.
    small_shape: tuple = (2, 3, 4, 5)
    empty_shapes: tuple = ((0, 4, 5, 5), (2, 0, 5, 5))
    # Some result sums hundreds of terms (see checks.assert_matches_reference): random inputs only.
    long_sums = False
    differentiable = False
    bad_inputs: list = []
    bad_options: list = []

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "op" in cls.__dict__:
            _TESTERS[cls.op] = cls

    # ------------------------------------------------------------------ what a subclass supplies

    def inputs(self, shape, dtype: torch.dtype, device, layout: str) -> tuple:
        raise NotImplementedError

    def op_args(self, *inputs) -> list[tuple]:
        raise NotImplementedError

    def options(self, *inputs) -> list[dict]:
        return [{}]

    def compile_options(self, *inputs) -> dict:
        return self.options(*inputs)[0]

    def call(self, backend: str, *inputs, **options):
        return getattr(camfast, self.op)(*inputs, backend=backend, **options)

    def ref(self, *inputs, **options):
        return getattr(reference, self.op)(*inputs, **options)

    def output_shape(self, shape) -> tuple:
        return tuple(shape)

    # ------------------------------------------------------------------ helpers for subclasses

    def compiled_op(self, backend: str):
        return _backend.op(self.op, backend)

    def assert_matches_reference(self, backend: str, *inputs, long_sums: bool = False, **options) -> None:
        """The op on `backend` and its gradients agree with the reference (checks' tolerance rules)."""
        checks.assert_matches_reference(lambda *t: self.call(backend, *t, **options),
                                        lambda *t: self.ref(*t, **options),
                                        *inputs, backward=self.differentiable, long_sums=long_sums)

    def shapes_for(self, backend: str) -> tuple:
        return self.shapes if backend == "triton" else (*self.large_shapes, *self.shapes)

    def valid_inputs(self) -> tuple:
        return self.inputs(self.small_shape, torch.float32, "cpu", "contiguous")

    def argument_errors(self) -> list:
        """pytest params (make, kwargs, error, message): the first tensor's checks, then the op's own."""
        name = next(iter(inspect.signature(getattr(camfast, self.op)).parameters))

        def first_replaced(bad, what, error, message):
            make = lambda: (bad(self.valid_inputs()[0]), *self.valid_inputs()[1:])  # noqa: E731
            return pytest.param(make, {}, error, f"{name} {message}", id=f"{name} {what}")

        return [
            first_replaced(lambda t: t[..., 0], "3-D", ValueError, "must be 4-D"),
            first_replaced(lambda t: t.to(torch.int64), "int64", TypeError, "must be float16"),
            first_replaced(lambda t: t[:, :, :0], "H=0", ValueError, "must have H > 0 and W > 0"),
            first_replaced(lambda t: t[..., :0], "W=0", ValueError, "must have H > 0 and W > 0"),
            first_replaced(lambda t: [[1.0]], "list", TypeError, "must be a torch.Tensor"),
            *[pytest.param(make, {}, error, message, id=message) for make, error, message in self.bad_inputs],
            *[pytest.param(self.valid_inputs, kwargs, error, message, id=", ".join(f"{k}={v!r}" for k, v in kwargs.items()))
              for kwargs, error, message in self.bad_options],
        ]

    def pytest_generate_tests(self, metafunc):
        if "make" in metafunc.fixturenames:
            metafunc.parametrize("make,kwargs,error,message", self.argument_errors())

    # ------------------------------------------------------------------ the tests

    @every_backend
    def test_matches_reference_on_random_inputs(self, device, backend):
        for dtype in checks.dtypes_for(device, backend):
            for shape in self.shapes_for(backend):
                for layout in checks.LAYOUTS:
                    inputs = self.inputs(shape, dtype, device, layout)
                    for options in self.options(*inputs):
                        self.assert_matches_reference(backend, *inputs, long_sums=self.long_sums, **options)

    @every_backend_and_reference
    def test_empty_batch_and_channels(self, device, backend):
        """The documented output shape, and output and gradients exactly the reference's."""
        for shape in self.empty_shapes:
            inputs = self.inputs(shape, torch.float32, device, "contiguous")
            for options in self.options(*inputs):
                grad_out = torch.ones(self.output_shape(shape), device=device)
                actual = checks.outputs_and_grads(lambda *t: self.call(backend, *t, **options),
                                                  checks.leaves(inputs), grad_out, self.differentiable)
                expected = checks.outputs_and_grads(lambda *t: self.ref(*t, **options),
                                                    checks.leaves(inputs), grad_out, self.differentiable)
                assert actual[0].shape == self.output_shape(shape)
                if self.differentiable:  # a gradient for every input, of its shape
                    assert [g.shape for g in actual[1:]] == [t.shape for t in inputs]
                for a, e in zip(actual, expected, strict=True):
                    torch.testing.assert_close(a, e, rtol=0, atol=0)

    @every_backend
    def test_opcheck(self, device, backend):
        for layout in ("contiguous", "channels_last"):
            inputs = self.inputs(self.small_shape, torch.float32, device, layout)
            if self.differentiable:
                inputs = checks.leaves(inputs)
            for args in self.op_args(*inputs):
                torch.library.opcheck(self.compiled_op(backend), args)

    @every_backend
    def test_compile_fullgraph(self, device, backend):
        inputs = self.inputs(self.small_shape, torch.float32, device, "contiguous")
        options = self.compile_options(*inputs)
        fn = lambda *t: self.call(backend, *t, **options)  # noqa: E731
        ref = lambda *t: self.ref(*t, **options)  # noqa: E731
        if self.differentiable:
            checks.assert_compiles_like_reference(fn, ref, *checks.leaves(inputs))
        else:
            torch._dynamo.reset()
            torch.testing.assert_close(torch.compile(fn, fullgraph=True)(*inputs), ref(*inputs))

    @every_backend_and_reference
    def test_inputs_are_not_modified(self, device, backend):
        for layout in checks.LAYOUTS:
            inputs = self.inputs(self.small_shape, torch.float32, device, layout)
            before = [t.clone() for t in inputs]
            for options in self.options(*inputs):
                out = self.call(backend, *[t.requires_grad_(self.differentiable) for t in inputs], **options)
                if self.differentiable:
                    out.backward(torch.randn_like(out))
            for t, b in zip(inputs, before, strict=True):
                assert torch.equal(t.detach(), b)

    @pytest.mark.parametrize("backend", BACKEND_NAMES)
    def test_bad_input_same_error_on_every_backend(self, backend, make, kwargs, error, message):
        with pytest.raises(error, match=message):
            self.call(backend, *make(), **kwargs)

    @every_backend
    def test_backward_raises(self, device, backend):
        """A forward-only op computes explainer inputs or outputs: a backward that reaches it raises."""
        inputs = checks.leaves(self.valid_inputs())
        out = self.call(backend, *inputs, **self.compile_options(*inputs))
        with pytest.raises(RuntimeError, match="not differentiable"):
            out.sum().backward()


class LayerOpTester(OpTester):
    """OpTester for a differentiable op: backward in every comparison, and gradcheck."""

    differentiable = True
    # Its backward is compared with the reference and gradchecked instead.
    test_backward_raises = None

    def gradcheck_options(self, *inputs) -> list[dict]:
        return self.options(*inputs)

    @every_backend
    def test_gradcheck(self, device, backend):
        for layout in ("contiguous", "channels_last"):
            inputs = checks.leaves(self.inputs(self.small_shape, torch.float64, device, layout))
            for options in self.gradcheck_options(*inputs):
                assert torch.autograd.gradcheck(lambda *t: self.call(backend, *t, **options), inputs)
