#!/bin/bash
# A multi-process job on this machine, for trying multi-host runs without a cluster: N processes,
# each driving RISE_JAX_LOCAL_DEVICES (default 2) CPU devices, joined by JAX's distributed runtime
# (gloo collectives). The mesh's data axis spans the processes (docs/ARCHITECTURE.md, "Multi-host").
#   launch/local_processes.sh 2 configs/demo.py /tmp/rise_mp [--config.field=value ...]
# Process 0 prints the run's messages (gloo's connection notices left out) and writes every
# artefact; every process's warnings and errors appear on stderr prefixed "[process i]". When one process fails, the others are stopped and the script
# exits with its status.
set -uo pipefail
N=${1:?usage: launch/local_processes.sh N CONFIG[:arg] WORKDIR [--config.field=value ...]}
CONFIG=${2:?config}
WORKDIR=${3:?workdir}
shift 3
PYTHON=${PYTHON:-python}
PORT=${RISE_JAX_PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
DEVICES=${RISE_JAX_LOCAL_DEVICES:-2}
pids=()
for ((i = 0; i < N; i++)); do
  JAX_COORDINATOR_ADDRESS=127.0.0.1:$PORT JAX_NUM_PROCESSES=$N JAX_PROCESS_ID=$i JAX_PLATFORMS=cpu \
    XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES ${XLA_FLAGS:-}" \
    "$PYTHON" -m rise_jax.launch --config="$CONFIG" --workdir="$WORKDIR" "$@" \
    > >(if ((i == 0)); then grep --line-buffered -v '^\[Gloo\] '; else cat > /dev/null; fi) \
    2> >(sed -u "s/^/[process $i] /" >&2) &
  pids+=($!)
done
stop_all() {
  ((${#pids[@]})) || return 0
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep "${RISE_JAX_GRACE:-5}"
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
}
trap 'stop_all; exit 130' INT TERM
while ((${#pids[@]})); do
  wait -n -p finished "${pids[@]}"
  rc=$?
  rest=()
  for p in "${pids[@]}"; do [[ $p != "$finished" ]] && rest+=("$p"); done
  pids=("${rest[@]}")
  if ((rc != 0)); then
    echo "local_processes.sh: a process exited with status $rc; stopping the others" >&2
    stop_all
    wait 2>/dev/null
    exit $rc
  fi
done
wait 2>/dev/null
exit 0
