#!/usr/bin/env bash
# One per node, started by job.sh through `srun --ntasks-per-node=1`: runs this node's `accelerate launch`
# (torch's elastic agent, which starts the training processes) and routes SLURM's stop signals to the
# training processes alone. Arguments: launch/train.py's arguments. Environment: see job.sh.
#
# Why the routing: SLURM signals EVERY process of a job step (this script, the agent, the training processes
# and their DataLoader workers; docs/slurm.md). The agent must not act on a stop signal: it dies of SIGUSR1
# (no handler), and on SIGTERM it forwards it and SIGKILLs the training after 30 s, or at once when a second
# SIGTERM interrupts its shutdown (preemption sends several) - both before the checkpoint is written. So the
# agent starts with SIGTERM and SIGUSR1 ignored (the training processes install their own handlers), and
# this script passes every stop signal on as SIGUSR1, repeating it until the training has exited.
set -euo pipefail
cd "${DISTGAN_ROOT:?set by job.sh}"

EXIT_PREEMPTED=3 # distgan/errors.py: stopped by a signal after writing a checkpoint
node_rank=${SLURM_NODEID:?run by srun from job.sh}
nnodes=${SLURM_STEP_NUM_NODES:-${SLURM_JOB_NUM_NODES:?}}

count_gpus() {
  if [[ -n ${SLURM_GPUS_ON_NODE:-} ]]; then # set by SLURM when the job asked for GPUs (--gpus-per-node)
    echo "$SLURM_GPUS_ON_NODE"
  elif [[ -n ${CUDA_VISIBLE_DEVICES+set} ]]; then # a comma list, empty or NoDevFiles when none is given
    if [[ -z $CUDA_VISIBLE_DEVICES || $CUDA_VISIBLE_DEVICES == NoDevFiles ]]; then echo 0; else
      tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c . || true
    fi
  elif command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
  else
    echo 0
  fi
}
gpus=$(count_gpus)
procs=${PROCS_PER_NODE:-$((gpus > 0 ? gpus : 1))}
total=$((nnodes * procs))
launch=(--num_machines "$nnodes" --machine_rank "$node_rank" --num_processes "$total"
  --main_process_ip "${MASTER_ADDR:?}" --main_process_port "${MASTER_PORT:?}" --dynamo_backend no)
# --multi_gpu is accelerate's name for DDP: NCCL on GPUs; on a node without GPUs distgan makes it gloo DDP
# (never use --cpu there: with several processes it trains unconnected copies). It needs 2+ processes.
if ((total > 1)); then launch=(--multi_gpu "${launch[@]}"); fi
read -r -a extra <<<"${ACCELERATE_ARGS:-}"

echo "distgan-slurm: node $node_rank/$nnodes ($(hostname -s)): $procs process(es), $gpus GPU(s)," \
  "main $MASTER_ADDR:$MASTER_PORT"

agent=""
stop=""
to_training() { # the training processes are the agent's children (the DataLoader workers are theirs)
  if [[ -n $agent ]]; then pkill -USR1 -P "$agent" 2>/dev/null || true; fi
}
# shellcheck disable=SC2317 # called by trap
on_stop() {
  [[ -n $stop ]] || echo "distgan-slurm: node $node_rank got SIG$1: the training checkpoints, then exits"
  stop=$1
  to_training
}

trap '' USR1 TERM # ignored dispositions survive fork and exec: the agent starts with both ignored
(
  # torch's agent handles SIGTERM (installing a handler undoes the ignore) unless told not to.
  export TORCHELASTIC_SIGNALS_TO_HANDLE=SIGINT,SIGHUP,SIGQUIT
  exec "${PYTHON:?}" -m accelerate.commands.launch "${launch[@]}" ${extra[@]+"${extra[@]}"} launch/train.py "$@"
) &
agent=$!
trap 'on_stop USR1' USR1
trap 'on_stop TERM' TERM

status=""
ticks=0
while [[ -z $status ]]; do
  if [[ -n $stop ]] && kill -0 "$agent" 2>/dev/null; then
    # Repeat the request every 5 s: a training process still starting up ignores it until it installs
    # its handler. (A trap runs when `sleep` returns.)
    sleep 1 || true
    if ((++ticks % 5 == 0)); then to_training; fi
    continue
  fi
  wait "$agent" && status=0 || status=$?
  # A trapped signal interrupts `wait` (status > 128): wait again while the agent runs.
  if ((status > 128)) && kill -0 "$agent" 2>/dev/null; then status=""; fi
done

if [[ -n $stop && $status -ne 0 ]]; then
  # The agent reports the training's exit 3 as a failure (ChildFailedError ... exitcode: 3) and exits 1.
  echo "distgan-slurm: node $node_rank stopped by SIG$stop (agent status $status): exit $EXIT_PREEMPTED"
  exit "$EXIT_PREEMPTED"
fi
exit "$status"
