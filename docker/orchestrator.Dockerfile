# fixbench/orchestrator: runs one study against services started by the engine
# (`--runtime external`, addresses from FIXBENCH_STORE / FIXBENCH_EVALUATOR /
# FIXBENCH_APPROACHES) and exits with the CLI's status. It builds faults too, so it sits on
# the platform layer (torch, the model zoo's data). Study specs are validated against
# services/*/approach.py, so the approach folders come along (a few kB); the report reuses the
# evaluator's aggregation tables, so the evaluator package does too.
ARG PLATFORM_IMAGE=fixbench/platform:latest
FROM ${PLATFORM_IMAGE}
USER root
COPY orchestrator /app/orchestrator
COPY evaluator /app/evaluator
COPY studies /app/studies
COPY services /app/services
COPY docker/orchestrator-entrypoint.sh /usr/local/bin/fixbench-orchestrator
RUN python -m compileall -q /app/orchestrator /app/evaluator \
    && mkdir -p /app/results /app/.fixbench/bench \
    && chown fixbench:fixbench /app/results /app/.fixbench /app/.fixbench/bench
# Not a server: nothing to probe.
HEALTHCHECK NONE
ENV FIXBENCH_STUDY=studies/quick.yaml \
    HOME=/tmp
USER fixbench
ENTRYPOINT ["fixbench-orchestrator"]
