"""A model using every camfast layer through the ways models leave Python or get transformed:
ONNX (run by ONNX Runtime), torch.export in training and evaluation mode, an AOTInductor package,
torch.jit.trace, torch.compile with dynamic shapes and backward, vmap and meta tensors."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
from torch import nn

import camfast
from camfast_testing.op_tester import BACKEND_NAMES, all_op_testers
from camfast_testing.layer_models import EveryLayer

TESTERS = {tester.op: tester for tester in all_op_testers()}
BATCH = torch.export.Dim("batch")


class ScoreCamMasks(nn.Module):
    """score_cam_masks is an explainer op, not a layer; serving an explainer exports it too."""

    def forward(self, act: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return camfast.score_cam_masks(act, image)


def _every_layer(batch: int):
    torch.manual_seed(0)
    return EveryLayer(), (torch.randn(batch, 3, 8, 8),)


def _score_cam(batch: int):
    return ScoreCamMasks(), (torch.randn(batch, 4, 3, 3), torch.rand(batch, 3, 8, 8))


MODELS = {"every_layer": _every_layer, "score_cam_masks": _score_cam}


def _as_tuple(result):
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def _camfast_ops(graph: torch.fx.Graph) -> set[str]:
    return {str(node.target) for node in graph.nodes if str(node.target).startswith("camfast.")}


def _export_onnx(model, inputs, path, dynamo: bool) -> None:
    """torch.onnx.export with the batch dimension of every input dynamic."""
    if dynamo:
        torch.onnx.export(model, inputs, dynamo=True, dynamic_shapes=[{0: BATCH} for _ in inputs]).save(str(path))
    else:  # the TorchScript-based exporter (deprecated, still the one older code calls)
        names = [f"input{i}" for i in range(len(inputs))]
        torch.onnx.export(model, inputs, str(path), dynamo=False, input_names=names,
                          dynamic_axes={name: {0: "batch"} for name in names})


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_runs_in_onnxruntime_with_a_dynamic_batch(name, dynamo, tmp_path):
    model, inputs = MODELS[name](2)
    model.eval()
    path = tmp_path / "model.onnx"
    _export_onnx(model, inputs, path, dynamo)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (2, 3, 1):
        _, inputs = MODELS[name](batch)
        feed = {arg.name: t.numpy() for arg, t in zip(session.get_inputs(), inputs)}
        with torch.no_grad():
            expected = _as_tuple(model(*inputs))
        actual = [torch.from_numpy(out) for out in session.run(None, feed)]
        torch.testing.assert_close(actual, list(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_torch_export_keeps_the_fused_ops(training):
    model, (x,) = _every_layer(2)
    model.train(training)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: BATCH},))
    assert _camfast_ops(program.graph) >= {"camfast.channel_spatial_attention.default",
                                            "camfast.attention_branch_mix.default",
                                            "camfast.thresholded_avg_pool2d.default"}
    assert ("camfast.adl.default" in _camfast_ops(program.graph)) == training
    x = torch.randn(3, 3, 8, 8)
    torch.manual_seed(1)  # ADL's draw, in training mode
    actual = program.module()(x)
    torch.manual_seed(1)
    torch.testing.assert_close(actual, model(x))


@pytest.mark.slow
def test_aoti_package_compiles_loads_and_runs(tmp_path):
    model, (x,) = _every_layer(2)
    model.eval()
    program = torch.export.export(model, (x,), dynamic_shapes=({0: BATCH},))
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "every_layer.pt2"))
    loaded = torch._inductor.aoti_load_package(path)
    for batch in (2, 5):
        x = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(tuple(loaded(x)), model(x))


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_jit_trace(training):
    model, (x,) = _every_layer(2)
    model.train(training)
    traced = torch.jit.trace(model, (x,), check_trace=False)
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(1)
    actual = traced(x)
    torch.manual_seed(1)
    torch.testing.assert_close(actual, model(x))


def test_compile_fullgraph_dynamic_shapes_with_backward():
    """A training step through the compiled model, at two batch sizes, equals eager's."""
    model, _ = _every_layer(2)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    labels = torch.tensor([0, 1, 2, 0, 1])
    for batch in (3, 5):
        x = torch.randn(batch, 3, 8, 8)
        losses, grads = [], []
        for run in (compiled, model):
            model.zero_grad()
            torch.manual_seed(1)  # ADL's draw; fallback_random makes inductor draw as eager
            with torch._inductor.config.patch(fallback_random=True):
                loss = model.loss(run(x), labels[:batch])
            loss.backward()
            losses.append(loss.detach())
            grads.append([p.grad.clone() for p in model.parameters()])
        torch.testing.assert_close(losses[0], losses[1])
        torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("op", sorted(TESTERS))
@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_vmap_equals_a_loop(op, backend):
    tester = TESTERS[op]
    # Three stacked batches of inputs; vmap over the new leading axis.
    stacked = [torch.stack(parts) for parts in zip(*[tester.valid_inputs() for _ in range(3)])]
    options = tester.options(*tester.valid_inputs())[0]
    fn = lambda *t: tester.call(backend, *t, **options)  # noqa: E731
    expected = torch.stack([fn(*[t[i] for t in stacked]) for i in range(3)])
    torch.testing.assert_close(torch.func.vmap(fn)(*stacked), expected)


@pytest.mark.parametrize("op", sorted(TESTERS))
@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_meta_tensors(op, backend):
    """The functions (which run the reference on meta: no kernel) and the compiled ops (their fake
    kernels) give the shapes and dtypes of a real call."""
    tester = TESTERS[op]
    inputs = tester.valid_inputs()
    meta = [t.to("meta") for t in inputs]
    options = tester.options(*inputs)[0]
    real = tester.call(backend, *inputs, **options)
    on_meta = tester.call(None, *meta, **options)
    assert (on_meta.device.type, on_meta.shape, on_meta.dtype) == ("meta", real.shape, real.dtype)
    if backend != "reference":
        for args in tester.op_args(*inputs):
            meta_args = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
            outs_real, outs_meta = _as_tuple(tester.compiled_op(backend)(*args)), _as_tuple(tester.compiled_op(backend)(*meta_args))
            assert [(o.shape, o.dtype) for o in outs_meta] == [(o.shape, o.dtype) for o in outs_real]


def test_module_on_meta_device():
    """Building a model on the meta device (as for large-model initialisation) and running it."""
    with torch.device("meta"):
        model = EveryLayer()
    logits, branch_logits, s = model(torch.randn(2, 3, 8, 8, device="meta"))
    assert logits.shape == branch_logits.shape == (2, 3) and s.shape == (2, 8) and s.device.type == "meta"
