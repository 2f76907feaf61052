#!/usr/bin/env bash
# Meta-train on a Cloud TPU pod slice: every worker runs the same `python -m launch.main --distributed`.
#
#   TPU_NAME=metadiff ZONE=us-central2-b ACCELERATOR=v4-32 WORKDIR=/mnt/shared/runs/pod \
#       launch/tpu_pod.sh configs/default.py [--config.KEY=VALUE ...]
#
# Creates the TPU VM if it does not exist (reuses it if it does), copies this checkout to every worker,
# installs requirements.txt and jax[tpu] of the same version on every worker, then starts the job on all
# workers at once (--worker=all). jax.distributed.initialize() finds the pod's workers itself.
# WORKDIR must be a folder that every worker sees (Filestore/NFS, or a gcsfuse-mounted bucket): the job
# checks this and stops with an error if it is not. Only worker 0 writes logs, plots and results.
# MetaDiff's batch of episodes is split over every chip of the slice, so metadiff.batch_size must be a
# multiple of the chip count (e.g. --config.metadiff.batch_size=32 on v4-32's 16 chips); the job says so.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${TPU_NAME:?set TPU_NAME, the TPU VM to create or reuse}"
: "${ZONE:?set ZONE, e.g. us-central2-b}"
: "${WORKDIR:?set WORKDIR, a folder every worker mounts}"
ACCELERATOR=${ACCELERATOR:-v4-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
CONFIG=${1:?usage: launch/tpu_pod.sh CONFIG [--config.KEY=VALUE ...]}
shift
EXTRA_ARGS=$(printf '%q ' "$@")
JAX_VERSION=$(sed -n 's/^jax==//p' requirements.txt)

if ! gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" > /dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" --accelerator-type "$ACCELERATOR" --version "$RUNTIME_VERSION"
fi
ARCHIVE=$(mktemp --suffix=.tar.gz)
trap 'rm -f "$ARCHIVE"' EXIT
tar czf "$ARCHIVE" --exclude=.git --exclude=.venv --exclude=runs .
gcloud compute tpus tpu-vm scp "$ARCHIVE" "$TPU_NAME":metadiff-jax.tar.gz --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  mkdir -p ~/metadiff-jax && tar xzf ~/metadiff-jax.tar.gz -C ~/metadiff-jax && cd ~/metadiff-jax
  python3 -m pip install -q -r requirements.txt 'jax[tpu]==$JAX_VERSION'
  python3 -m launch.main --config $CONFIG --workdir $WORKDIR --distributed $EXTRA_ARGS"
