"""ONNX I/O: validation, onnxruntime sessions, ONNX <-> torch. Torch is imported lazily so
that services without torch (e.g. Arachne's image) can use validation and sessions."""

from fixbench.onnxio.session import Predictor, execution_provider
from fixbench.onnxio.validate import InvalidModelError, load_model, validate_model

__all__ = ["InvalidModelError", "load_model", "validate_model", "Predictor", "execution_provider"]
