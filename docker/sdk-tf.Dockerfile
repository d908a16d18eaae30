# The TensorFlow layer: fixbench/sdk + TensorFlow CPU + the ONNX <-> Keras converters of
# fixbench/sdk/keras_bridge.py (onnx2keras, tf2onnx). No torch. Approaches whose original tool
# is Keras / TensorFlow code build FROM it (service.toml: layer = "sdk-tf").
# Pins: fixbench/catalog/environments.py TF_STACK holds the same three, for local environments.
ARG SDK_IMAGE=fixbench/sdk:latest
FROM ${SDK_IMAGE}
USER root
ARG TENSORFLOW_VERSION=2.21.0
ARG ONNX2KERAS_VERSION=0.0.25
ARG TF2ONNX_VERSION=1.17.0
# The SDK's pins are constraints: TensorFlow may not move numpy, protobuf or onnxruntime.
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    pip install -c /opt/requirements/sdk.txt "tensorflow-cpu==$TENSORFLOW_VERSION" "tf2onnx==$TF2ONNX_VERSION"; \
    # onnx2keras declares `tensorflow` (the full 572 MB wheel beside tensorflow-cpu): without it
    pip install --no-deps "onnx2keras==$ONNX2KERAS_VERSION"; \
    python -c 'import importlib.util as u; assert u.find_spec("torch") is None, "torch in the TensorFlow layer"'; \
    TF_CPP_MIN_LOG_LEVEL=3 python -c 'import tensorflow, keras, onnx2keras, tf2onnx; print("tf", tensorflow.__version__, "keras", keras.__version__)'
USER fixbench
