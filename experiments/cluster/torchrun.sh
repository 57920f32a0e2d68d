#!/usr/bin/env bash
# Multi-node DDP with torchrun: run this script once on every node.
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 bash experiments/cluster/torchrun.sh   # on node0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 bash experiments/cluster/torchrun.sh   # on node1
# Lightning reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).
# data.p × data.k is the batch of ONE process: the global batch is P·K·GPUS·NNODES.
set -euo pipefail
CONFIG=${CONFIG:-experiments/digits.yaml}
GPUS=${GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}
torchrun \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --nproc_per_node="${GPUS}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  -m embedlab fit --config "${CONFIG}" \
  --trainer.accelerator=gpu --trainer.devices="${GPUS}" --trainer.num_nodes="${NNODES:-1}" \
  --trainer.strategy=ddp --trainer.sync_batchnorm=true --model.gather_embeddings=true "$@"
