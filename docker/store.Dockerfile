# fixbench/store: the content-addressed artifact store (gRPC Artifacts). Blobs live in
# /data/store; compose mounts a named volume there so they survive restarts.
ARG SDK_IMAGE=fixbench/sdk:latest
FROM ${SDK_IMAGE}
ENV FIXBENCH_STORE_ROOT=/data/store
# Where compose mounts the signing-key volume; owned by the service user so that a new volume
# takes that owner and the store can write the key there.
USER root
RUN mkdir -p /data/keys && chown fixbench:fixbench /data/keys
USER fixbench
VOLUME ["/data/store"]
CMD ["python", "-m", "fixbench.artifacts"]
