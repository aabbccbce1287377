#!/usr/bin/env bash
# The body of a distgan SLURM job (single_node.sbatch and multi_node.sbatch exec it): one `accelerate launch`
# per node through srun, stop signals turned into a checkpoint, and the job requeued to resume from it.
#
# Knobs (environment variables, exported to the job by sbatch; arguments after the script are overrides):
#   CONFIG          config name in configs/ or a YAML path                         (default: demo_digits)
#   OUTPUT_DIR      run directory; every (re)start resumes its newest checkpoint   (default: runs/<config name>)
#   OVERRIDES       extra key=value overrides, space separated (as are the script's arguments)
#   PROCS_PER_NODE  training processes per node       (default: the node's GPUs; 1 on a node without GPUs)
#   MASTER_ADDR     address of the main node          (default: NodeAddr of the allocation's first node)
#   MASTER_PORT     rendezvous port on the main node  (default: 20000 + job id % 10000)
#   ACCELERATE_ARGS extra `accelerate launch` options, e.g. "--mixed_precision bf16"
#   PYTHON          interpreter with distgan's stack  (default: <repo>/.venv/bin/python)
#   DISTGAN_ROOT    the checkout                      (default: the directory sbatch was run from)
#
# Signals (what SLURM delivers is measured and explained in docs/slurm.md):
#   USR1 to this shell (`--signal=B:USR1@T` before the time limit, or `scancel --batch --signal=USR1`):
#        forwarded to every process of the training step; the training finishes its step, checkpoints and
#        exits 3, and this job requeues itself. The next start passes --resume latest and continues.
#   TERM/USR1 to the training step only (preemption's notice, `scancel --signal=...`): the same, the
#        step's exit status 3 tells this shell to requeue.
#   TERM to this shell (`scancel`, the hard time limit): the training still checkpoints if KillWait allows, but
#        the job is NOT requeued: a cancelled job stays cancelled (`scontrol requeue` would revive even it).
set -euo pipefail

EXIT_PREEMPTED=3 # distgan/errors.py: stopped by a signal after writing a checkpoint

root=${DISTGAN_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
if [[ ! -f $root/launch/train.py ]]; then
  echo "error: $root is not a distgan checkout: run sbatch from the repository root or set DISTGAN_ROOT" >&2
  exit 2
fi
cd "$root"
: "${SLURM_JOB_ID:?run this through sbatch (scripts/slurm/single_node.sbatch or multi_node.sbatch)}"

config=${CONFIG:-demo_digits}
name=$(basename "$config")
output_dir=${OUTPUT_DIR:-runs/${name%.y*ml}}
read -r -a overrides <<<"${OVERRIDES:-}" # ${a[@]+...} below: bash < 4.4 calls an empty array unbound

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | awk 'NR == 1')
# NodeAddr is what SLURM itself uses to reach the node; on most clusters it is the host name, but a node's
# SLURM name need not resolve (several slurmd on one host, or names that are not DNS names).
head_addr=$(scontrol show node "$head_node" | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^NodeAddr=/) print substr($i, 10)}')
export MASTER_ADDR=${MASTER_ADDR:-${head_addr:-$head_node}}
export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 10000))} # differs between jobs sharing a node
export DISTGAN_ROOT=$root
export PYTHON=${PYTHON:-$root/.venv/bin/python}

echo "distgan-slurm: job $SLURM_JOB_ID start $((${SLURM_RESTART_COUNT:-0} + 1)) on ${SLURM_JOB_NUM_NODES:-1} node(s)" \
  "($SLURM_JOB_NODELIST), main $MASTER_ADDR:$MASTER_PORT, config $config, output $output_dir"

batch_signal=""
# shellcheck disable=SC2317 # called by trap
on_signal() {
  batch_signal=$1
  echo "distgan-slurm: batch shell got SIG$1: asking the training to checkpoint and stop"
  # srun forwards USR1 to every process of the step (it would turn TERM into an immediate SIGKILL of the
  # step). node.sh passes it on to the training processes; the agent ignores it.
  if [[ -n ${srun_pid:-} ]]; then kill -USR1 "$srun_pid" 2>/dev/null || true; fi
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM

cpus=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-}}
srun_args=(--nodes="${SLURM_JOB_NUM_NODES:-1}" --ntasks-per-node=1 --kill-on-bad-exit=0)
# srun (22.05+) does not inherit sbatch's --cpus-per-task: give the one task per node all of the node's CPUs,
# or it and all its training processes and data workers could be bound to one CPU.
[[ -n $cpus ]] && srun_args+=(--cpus-per-task="${cpus%%(*}")

srun "${srun_args[@]}" bash "$root/scripts/slurm/node.sh" \
  --config "$config" --output-dir "$output_dir" --resume latest ${overrides[@]+"${overrides[@]}"} "$@" &
srun_pid=$!

# `wait` returns early (status > 128) whenever a trapped signal arrives: keep waiting while srun lives.
status=""
while [[ -z $status ]]; do
  wait "$srun_pid" && status=0 || status=$?
  if ((status > 128)) && kill -0 "$srun_pid" 2>/dev/null; then status=""; fi
done
srun_pid=""

if ((status == EXIT_PREEMPTED)) && [[ $batch_signal != TERM ]]; then
  echo "distgan-slurm: training stopped after a checkpoint; requeueing job $SLURM_JOB_ID"
  trap - USR1 TERM # the requeue ends this run with SIGTERM
  if scontrol requeue "$SLURM_JOB_ID"; then
    exit 0
  fi
  echo "distgan-slurm: requeue refused (submitted with --no-requeue?); resubmit to resume" >&2
fi
echo "distgan-slurm: training step ended with status $status"
exit "$status"
