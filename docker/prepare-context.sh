#!/usr/bin/env bash
# Fills the build context's wheelhouse (.docker-build/wheels, git-ignored) with the pinned CPU
# torch wheel when this machine has it, so image builds install torch without the network.
# Without one, builds fetch torch from TORCH_INDEX_URL (the PyTorch CPU index by default).
#   FIXBENCH_WHEELHOUSE  folder to take wheels from (default /opt/wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${FIXBENCH_WHEELHOUSE:-/opt/wheels}
dest=.docker-build/wheels
mkdir -p "$dest"
shopt -s nullglob
for wheel in "$src"/torch-*+cpu-cp311-*.whl; do
  # a hard link costs no space when both folders are on one file system
  [ -e "$dest/$(basename "$wheel")" ] || ln "$wheel" "$dest/" 2>/dev/null || cp "$wheel" "$dest/"
done
ls "$dest"
