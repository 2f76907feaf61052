#!/usr/bin/env bash
# Meta-train on every GPU of one host: one process sees all of them, and config.parallel.devices = 0
# (the default) puts them all in the mesh that MetaDiff's outer step and sampler are sharded over.
#
#   launch/multi_gpu.sh configs/default.py runs/gpu [--config.KEY=VALUE ...]
#
# Installs requirements.txt and jax[cuda12] of the same version, then runs the main job. metadiff.batch_size
# must be a multiple of the GPU count (8 episodes fit 1, 2, 4 or 8 GPUs); the job says so if it is not.
# CUDA_VISIBLE_DEVICES chooses the GPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:?usage: launch/multi_gpu.sh CONFIG WORKDIR [--config.KEY=VALUE ...]}
WORKDIR=${2:?usage: launch/multi_gpu.sh CONFIG WORKDIR [--config.KEY=VALUE ...]}
shift 2
JAX_VERSION=$(sed -n 's/^jax==//p' requirements.txt)
python -m pip install -q -r requirements.txt "jax[cuda12]==$JAX_VERSION"
python -m launch.main --config "$CONFIG" --workdir "$WORKDIR" "$@"
