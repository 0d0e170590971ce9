#!/bin/bash
# Multi-host run on a Cloud TPU VM slice: the same command on every worker.
#   launch/tpu_vm.sh my-tpu us-central2-b configs/qwen3_30b_a3b.py:bn /runs/qwen_bn
# On a pod slice jax.distributed.initialize() (called by rise_jax.launch, rise_jax/distributed.py,
# when TPU_WORKER_HOSTNAMES lists several workers) finds the other hosts by itself. Process 0
# writes every artefact: WORKDIR must be shared (GCS FUSE / NFS).
set -euo pipefail
TPU=${1:?tpu name}; ZONE=${2:?zone}; CONFIG=${3:?config}; WORKDIR=${4:?workdir}
shift 4
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="\
  cd ~/rise_jax && pip install -q -r requirements.txt -e . 'jax[tpu]' && \
  python -m rise_jax.launch --config=$CONFIG --workdir=$WORKDIR $*"
