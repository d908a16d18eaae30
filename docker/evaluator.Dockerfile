# fixbench/evaluator: the evaluator service (clean metrics on onnxruntime, attacks on a
# torch re-import, fairness, statistics), on the platform layer that has all of that.
ARG PLATFORM_IMAGE=fixbench/platform:latest
FROM ${PLATFORM_IMAGE}
USER root
COPY evaluator /app/evaluator
RUN python -m compileall -q /app/evaluator
USER fixbench
CMD ["python", "-m", "evaluator"]
