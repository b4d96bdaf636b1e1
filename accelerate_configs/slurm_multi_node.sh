#!/bin/bash
# SLURM example: 2 nodes x 8 GPUs, one `accelerate launch` per node, each starting 8 processes.
#   sbatch accelerate_configs/slurm_multi_node.sh configs/segformer/segformer_mit-b5_8xb2-160k_ade20k-512x512.yaml
# The config file gives the kind of run (multi_node.yaml: DDP; fsdp2.yaml: FSDP2); the machine
# count, ranks and rendezvous come from SLURM below and override the file's.
#SBATCH --job-name=segaccel
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch slurm_multi_node.sh CONFIG [train.py options]}
shift
ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-accelerate_configs/multi_node.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}
WORK_DIR=${WORK_DIR:-work_dirs/$(basename "$CONFIG" .yaml)}

# One task per node; each runs accelerate launch with its own machine rank (SLURM_NODEID).
# --resume: a requeued or restarted job continues from the latest complete checkpoint.
srun --kill-on-bad-exit=1 bash -c "accelerate launch \
  --config_file $ACCELERATE_CONFIG \
  --num_machines $SLURM_NNODES \
  --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
  --machine_rank \$SLURM_NODEID \
  --main_process_ip $MAIN_IP \
  --main_process_port $MAIN_PORT \
  --rdzv_backend static \
  scripts/train.py $CONFIG --work-dir $WORK_DIR --resume $*"
