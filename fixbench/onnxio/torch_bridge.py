"""ONNX <-> torch. Export uses the legacy exporter (the dynamo exporter's graphs break
onnx2torch; constant folding would fuse BatchNorm away)."""

from __future__ import annotations

import io
import sys
import types

import onnx


def _install_torchvision_standin() -> None:
    """onnx2torch imports torchvision for NMS / RoIAlign only; no CPU torchvision exists here,
    so register a tiny module whose ops refuse to run rather than pulling a CUDA stack."""
    try:
        import torchvision  # noqa: F401

        return
    except ImportError:
        pass

    def _unavailable(*_args, **_kwargs):
        raise RuntimeError("torchvision is not installed: NMS / RoIAlign ONNX ops are unsupported")

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = _unavailable
    ops.roi_align = _unavailable
    tv.ops = ops
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.ops", ops)


def onnx_to_torch(model: onnx.ModelProto):
    """An nn.Module computing the same function as the ONNX model (float32, eval mode)."""
    _install_torchvision_standin()
    from onnx2torch import convert

    module = convert(model)
    return module.float().eval()


def torch_to_onnx_bytes(module, example_input, input_name: str = "input", output_name: str = "output") -> bytes:
    """Exports a module to ONNX bytes (opset 17, legacy exporter, dynamic batch)."""
    import torch

    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example_input,),
            buf,
            dynamo=False,
            opset_version=17,
            do_constant_folding=False,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        )
    module.train(was_training)
    return buf.getvalue()
