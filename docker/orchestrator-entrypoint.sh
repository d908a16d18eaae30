#!/bin/sh
# Runs the study named by FIXBENCH_STUDY with the external runtime. Before that it
#  - checks that the mounted results and fault-bench folders are writable by this user (a
#    bind mount owned by another uid otherwise fails deep in the study as a PermissionError);
# (FIXBENCH_EXPECT_REPLICAS, for Swarm and Kubernetes, is handled by the external runtime.)
# Extra arguments are passed to `study run` (e.g. --out results/mine).
set -eu
for dir in results .fixbench/bench; do
  if ! mkdir -p "$dir" 2>/dev/null || [ ! -w "$dir" ]; then
    echo "fixbench-orchestrator: /app/$dir is not writable by uid $(id -u); run compose with" \
         "FIXBENCH_UID=\$(id -u) FIXBENCH_GID=\$(id -g) or make the mounted folder writable" >&2
    exit 2
  fi
done
# FIXBENCH_SCALE (tiny / small / medium / full or a fraction) is the CLI's --scale, so that
# `FIXBENCH_SCALE=small docker compose up` runs a study at another scale without editing it.
if [ -n "${FIXBENCH_SCALE:-}" ]; then
  set -- --scale "$FIXBENCH_SCALE" "$@"
fi
exec python -m orchestrator.cli study run "$FIXBENCH_STUDY" --runtime external "$@"
