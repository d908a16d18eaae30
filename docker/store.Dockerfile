# fixbench/store: the content-addressed artifact store (gRPC Artifacts). Blobs live in
# /data/store; compose mounts a named volume there so they survive restarts.
ARG SDK_IMAGE=fixbench/sdk:latest
FROM ${SDK_IMAGE}
ENV FIXBENCH_STORE_ROOT=/data/store
VOLUME ["/data/store"]
CMD ["python", "-m", "fixbench.artifacts"]
