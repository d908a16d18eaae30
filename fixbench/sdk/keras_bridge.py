"""ONNX <-> Keras for approaches whose original tool is Keras / TensorFlow code.

    from fixbench.sdk.keras_bridge import onnx_to_keras, keras_to_onnx, channels_last

    model = onnx_to_keras(ctx.model_bytes, check_x=ctx.split("valid").x)      # parity-gated
    ...  # the tool repairs `model` (a Keras 3 functional model, channels-first like the ONNX)
    repaired = keras_to_onnx(model, check_x=valid.x)                           # parity-gated

Converters, chosen because they work here on the SDK's own pins (numpy 2, onnx 1.23,
onnxruntime 1.32, protobuf 7, Python 3.11) with TensorFlow CPU 2.21:
- ONNX -> Keras: `onnx2keras` 0.0.25. It builds a Keras 3 functional model layer by layer
  (Dense, Conv2D channels-first, BatchNormalization, pooling, ...), so a tool sees real layers
  and weights. `onnx2tf` was the other candidate: its 2.x releases need Python >= 3.12 and its
  1.x releases pin numpy 1.26, onnx 1.19, onnxruntime 1.23 and an older protobuf, which would
  replace the SDK's pins in the same image.
- Keras -> ONNX: `tf2onnx` 1.17 through `from_function` on the model's traced call. Its
  `from_keras` fails on Keras 3 models; tracing the call works for any Keras 3 model and keeps
  one Keras (no tf-keras beside it).

Every conversion is gated: onnxruntime and TensorFlow must agree on the given inputs (the
validation split) within `atol + rtol * max|reference|`; otherwise a `ParityError` carries the
measured maximum difference, so a job never goes on with a silently different model. Importing
this module does not import TensorFlow; the first conversion does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx

from fixbench.sdk.errors import Unadaptable

# Measured on the zoo's MLP, LeNet-5 and a BatchNorm CNN (tests/sdk/test_keras_bridge.py):
# ONNX -> Keras within 2e-7, the round trip back within 2e-7 (float32 rounding of a different
# summation order). The default gate leaves two orders of magnitude of room above that.
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5
OPSET = 17


class ParityError(RuntimeError):
    """A converted model whose outputs differ from the source's beyond the tolerance."""

    def __init__(self, direction: str, max_diff: float, bound: float, samples: int):
        self.direction, self.max_diff, self.bound, self.samples = direction, max_diff, bound, samples
        super().__init__(f"{direction} conversion failed its parity gate: max |onnxruntime - tensorflow| = "
                         f"{max_diff:.3g} > {bound:.3g} on {samples} validation inputs; the converted model "
                         "would not be the same model, so it is not used")


class ImportParityError(ParityError, Unadaptable):
    """The job's model cannot be carried into Keras faithfully: the approach cannot apply to it,
    so the SDK answers UNADAPTABLE (fixbench/sdk/errors.py) with the measured difference."""


class ExportParityError(ParityError):
    """The repaired Keras model did not come back to ONNX faithfully: the SDK answers
    TOOL_ERROR with the measured difference, never a model other than the one repaired."""


class KerasConversionError(Unadaptable):
    """The converter does not support an operator of the job's model (UNADAPTABLE, named)."""


# onnx2keras builds channels-first Conv2D layers, and TensorFlow's own CPU kernels run NHWC
# only: NCHW convolutions run through its oneDNN kernels, which TensorFlow turns on by itself
# only on some x86 CPUs (on an AMD EPYC here it did not, and every CNN failed with "Conv2D ...
# only supports the NHWC tensor format on the CPU"). Set on import, before any TensorFlow
# import (a service such as care-keras imports Keras at start, after this module).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _tensorflow():
    """TensorFlow and Keras 3, imported on first use (quiet, single-threaded by default)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.pop("TF_USE_LEGACY_KERAS", None)  # onnx2keras builds Keras 3 models
    import keras
    import tensorflow as tf

    threads = int(os.environ.get("FIXBENCH_THREADS", "0") or 0)
    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # already initialised: the first setting stays
    return tf, keras


def channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) images as (N, H, W, C), the layout most Keras tools assume; other ranks
    unchanged."""
    x = np.asarray(x)
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1))) if x.ndim == 4 else x


def channels_first(x: np.ndarray) -> np.ndarray:
    """The inverse of `channels_last`."""
    x = np.asarray(x)
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))) if x.ndim == 4 else x


def keras_split(x: np.ndarray, y: np.ndarray, num_classes: int | None = None, nhwc: bool = True):
    """A split as Keras tools load it: float32 images channels-last (when `nhwc`), and one-hot
    float32 labels when `num_classes` is given (categorical cross-entropy), else int64."""
    x = np.asarray(x, dtype=np.float32)
    x = channels_last(x) if nhwc else x
    y = np.asarray(y, dtype=np.int64)
    if num_classes is not None:
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"labels span {y.min()}..{y.max()}, outside 0..{num_classes - 1}")
        y = np.eye(num_classes, dtype=np.float32)[y]
    return x, y


@dataclass(frozen=True)
class Parity:
    max_diff: float
    bound: float
    samples: int

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_diff)) and self.max_diff <= self.bound


def _compare(reference: np.ndarray, other: np.ndarray, atol: float, rtol: float) -> Parity:
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    if reference.shape != other.shape:
        return Parity(float("inf"), 0.0, len(reference))
    scale = float(np.abs(reference).max(initial=0.0))
    diff = float(np.abs(reference - other).max(initial=0.0)) if reference.size else 0.0
    return Parity(diff if np.isfinite(other).all() else float("inf"), atol + rtol * scale, len(reference))


def _onnx_scores(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from fixbench.onnxio import Predictor

    return Predictor(model_bytes, threads=int(os.environ.get("FIXBENCH_THREADS", "1") or 1)).scores(x)


def keras_scores(model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The Keras model's outputs (inference mode) in batches, float32."""
    parts = [np.asarray(model(x[i : i + batch], training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), np.float32)


def _check_x(check_x: np.ndarray, limit: int) -> np.ndarray:
    x = np.asarray(check_x, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError("check_x must hold at least one input (the validation split's x)")
    return x[:limit]


def onnx_to_keras(model_bytes: bytes | onnx.ModelProto, check_x: np.ndarray, atol: float = DEFAULT_ATOL,
                  rtol: float = DEFAULT_RTOL, limit: int = 512, channels_last_input: bool = False):
    """The ONNX model as a Keras 3 functional model, gated by parity on `check_x` (inputs in the
    ONNX layout, e.g. the validation split's x). With `channels_last_input` the Keras model
    takes (N, H, W, C) images (a Permute in front), as tools written for NHWC data expect.
    Raises ImportParityError (UNADAPTABLE) or KerasConversionError (UNADAPTABLE)."""
    tf, keras = _tensorflow()
    from onnx2keras import onnx_to_keras as convert

    proto = model_bytes if isinstance(model_bytes, onnx.ModelProto) else onnx.load_from_string(model_bytes)
    raw = proto.SerializeToString()
    inputs = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if len(inputs) != 1 or len(proto.graph.output) != 1:
        raise KerasConversionError(f"the bridge carries single-input, single-output models; this one has "
                                   f"{len(inputs)} inputs and {len(proto.graph.output)} outputs")
    x = _check_x(check_x, limit)
    try:
        model = convert(proto, inputs, verbose=False, name_policy="renumerate")
    except (KeyError, NotImplementedError, AttributeError, ValueError, TypeError) as exc:
        ops = sorted({n.op_type for n in proto.graph.node})
        raise KerasConversionError(f"onnx2keras cannot convert this model ({type(exc).__name__}: {exc}); "
                                   f"its operators: {', '.join(ops)}") from exc
    if channels_last_input:
        if x.ndim != 4:
            raise ValueError(f"channels_last_input needs image inputs (N, C, H, W), not shape {x.shape}")
        c, h, w = x.shape[1:]
        inp = keras.Input(shape=(h, w, c), name=inputs[0])
        model = keras.Model(inp, model(keras.layers.Permute((3, 1, 2))(inp)), name="channels_last")
    parity = _compare(_onnx_scores(raw, x), keras_scores(model, channels_last(x) if channels_last_input else x),
                      atol, rtol)
    if not parity.ok:
        raise ImportParityError("ONNX -> Keras", parity.max_diff, parity.bound, parity.samples)
    model.fixbench_parity = parity  # what the gate measured, for the approach's metrics
    return model


def _rename_output(proto: onnx.ModelProto, input_name: str, output_name: str) -> onnx.ModelProto:
    """tf2onnx names tensors after the TF graph ('Identity:0'); the job's contract names them as
    the faulty model did, with a dynamic batch axis."""
    graph = proto.graph
    old_in, old_out = graph.input[0].name, graph.output[0].name
    for node in graph.node:
        node.input[:] = [input_name if i == old_in else output_name if i == old_out else i for i in node.input]
        node.output[:] = [output_name if o == old_out else o for o in node.output]
    graph.input[0].name, graph.output[0].name = input_name, output_name
    for value in (graph.input[0], graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    return proto


def keras_to_onnx(model, check_x: np.ndarray, input_name: str = "input", output_name: str = "output",
                  channels_last_input: bool | None = None, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
                  limit: int = 512) -> bytes:
    """The Keras model as ONNX bytes taking inputs in `check_x`'s layout (channels-first images,
    as the job's model), gated by parity on `check_x`. A model with channels-last input (from
    `onnx_to_keras(..., channels_last_input=True)` or a Keras tool) is detected from its input
    shape and gets a transpose in front. Raises ExportParityError (TOOL_ERROR)."""
    tf, keras = _tensorflow()
    import tf2onnx

    x = _check_x(check_x, limit)
    shape = tuple(model.inputs[0].shape[1:])
    if channels_last_input is None:
        channels_last_input = x.ndim == 4 and shape == tuple(x.shape[2:]) + (x.shape[1],) != tuple(x.shape[1:])
    spec = (tf.TensorSpec((None,) + shape, tf.float32, name=input_name),)
    fn = tf.function(lambda t: model(t, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=OPSET,
                                             inputs_as_nchw=[input_name] if channels_last_input else None)
    proto = _rename_output(proto, input_name, output_name)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    parity = _compare(keras_scores(model, channels_last(x) if channels_last_input else x), _onnx_scores(data, x),
                      atol, rtol)
    if not parity.ok:
        raise ExportParityError("Keras -> ONNX", parity.max_diff, parity.bound, parity.samples)
    return data
