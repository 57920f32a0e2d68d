#!/usr/bin/env bash
# Multi-node DDP with torchrun: N nodes × G GPUs. Run this script once on every node, e.g. 2 nodes:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 bash experiments/cluster/torchrun.sh   # on node0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 bash experiments/cluster/torchrun.sh   # on node1
# `bash experiments/cluster/torchrun.sh --check` checks the prerequisites and prints the command.
#
# Settings (environment variables; options after the script go to `embedlab fit`):
#   NNODES, NODE_RANK     number of nodes, this node's rank (0 … NNODES-1); default 1 and 0
#   MASTER_ADDR/PORT      node 0's address and a free port there; default 127.0.0.1:29500
#   GPUS                  processes (GPUs) per node; default: every GPU nvidia-smi lists
#   CONFIG                the recipe; default experiments/digits.yaml
#   EMBEDLAB_DATA_ROOT    datasets folder, on storage every node mounts at the same path
#   EMBEDLAB_OUTPUT_ROOT  runs folder (default runs/), shared as well: only rank 0 writes the run
#                         folder, but every rank reads its checkpoints for the final test
#   RESUME                a run folder (runs/EXP/version_N): continue it from its last.ckpt
#                         (same as `--config RUN/config.yaml --ckpt_path RUN/checkpoints/last.ckpt`)
#
# data.p × data.k is the batch of ONE process: each step trains on P·K·GPUS·NNODES images.
# Lightning reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). On GPUs
# the backend is NCCL (NCCL_SOCKET_IFNAME=eth0 picks the network interface when the default is
# wrong; NCCL_DEBUG=INFO says why a rendezvous fails) and batch norms become SyncBatchNorm, which
# recipes with batch-norm backbones want (ResNets, BNNeck). Without a GPU the script says so and
# runs on the CPU with gloo instead (no SyncBatchNorm: torch has it for GPUs only).
set -euo pipefail

die() {
  echo "embedlab torchrun.sh: $*" >&2
  exit 2
}

CHECK=0
if [[ "${1:-}" == "--check" ]]; then
  CHECK=1
  shift
fi
cd "$(dirname "${BASH_SOURCE[0]}")/../.."  # the repository: recipes are named from there
if [[ -z "${PYTHON:-}" && -x .venv/bin/python ]]; then
  PYTHON=.venv/bin/python
fi
PYTHON=${PYTHON:-python3}
command -v "${PYTHON}" >/dev/null || die "no Python: ${PYTHON} is not on PATH (set PYTHON=…)"

NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
CONFIG=${CONFIG:-experiments/digits.yaml}
[[ "${NNODES}" =~ ^[1-9][0-9]*$ ]] || die "NNODES=${NNODES} is not a number of nodes"
[[ "${NODE_RANK}" =~ ^[0-9]+$ && "${NODE_RANK}" -lt "${NNODES}" ]] \
  || die "NODE_RANK=${NODE_RANK} is not in 0…$((NNODES - 1))"
if [[ "${NNODES}" -gt 1 && "${MASTER_ADDR}" == 127.0.0.1 ]]; then
  die "NNODES=${NNODES} needs MASTER_ADDR=<node 0's address> (127.0.0.1 reaches only this node)"
fi
if [[ -n "${EMBEDLAB_DATA_ROOT:-}" && ! -d "${EMBEDLAB_DATA_ROOT}" ]]; then
  die "EMBEDLAB_DATA_ROOT=${EMBEDLAB_DATA_ROOT} is not a folder on this node"
fi
RUN_ARGS=()
if [[ -n "${RESUME:-}" ]]; then
  [[ -f "${RESUME}/checkpoints/last.ckpt" ]] || die "RESUME=${RESUME} has no checkpoints/last.ckpt"
  CONFIG=${RESUME}/config.yaml
  RUN_ARGS=(--ckpt_path "${RESUME}/checkpoints/last.ckpt")
fi
[[ -f "${CONFIG}" ]] || die "CONFIG=${CONFIG} is not a file"
"${PYTHON}" -c "import torch.distributed.run, embedlab" 2>/dev/null \
  || die "${PYTHON} cannot import torch and embedlab (pip install -e . in this repository)"

if [[ -z "${GPUS:-}" ]] && command -v nvidia-smi >/dev/null; then
  GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
fi
if [[ "${GPUS:-0}" -gt 0 ]] && "${PYTHON}" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  DEVICE_ARGS=(--trainer.accelerator=gpu --trainer.sync_batchnorm=true)  # NCCL
else
  if ! command -v nvidia-smi >/dev/null; then
    why="nvidia-smi not found"
  else
    why="torch sees no GPU"
  fi
  GPUS=${CPU_PROCS:-1}
  echo "embedlab torchrun.sh: no GPU (${why}): on the CPU with gloo, CPU_PROCS=${GPUS} process(es) per node" >&2
  DEVICE_ARGS=(--trainer.accelerator=cpu)
fi

COMMAND=(
  "${PYTHON}" -m torch.distributed.run
  --nnodes="${NNODES}" --node-rank="${NODE_RANK}" --nproc-per-node="${GPUS}"
  --master-addr="${MASTER_ADDR}" --master-port="${MASTER_PORT}"
  -m embedlab fit --config "${CONFIG}" "${RUN_ARGS[@]}"
  "${DEVICE_ARGS[@]}" --trainer.devices="${GPUS}" --trainer.num_nodes="${NNODES}"
  --trainer.strategy=ddp --model.gather_embeddings=true "$@"
)
if [[ "${CHECK}" == 1 ]]; then
  echo "embedlab torchrun.sh: ready; node ${NODE_RANK} of ${NNODES} would run:"
  echo "${COMMAND[*]}"
  exit 0
fi
exec "${COMMAND[@]}"
