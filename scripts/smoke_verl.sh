#!/usr/bin/env bash
# The verl smoke run against a rayenv pool, on a GPU box that is (or joins) the Ray head:
#   scripts/smoke_verl.sh [--dry-run] [hydra overrides...]
# e.g. scripts/smoke_verl.sh actor_rollout_ref.model.path=/models/UI-TARS-1.5-7B
#   1. the trainer venv (scripts/verl-venv.sh; on a GPU box set RAYENV_TORCH to your CUDA torch),
#   2. python -m rayenv.verl.smoke: writes data.train_files from OSWorld/tasks, finds the pool of
#      configs/smoke_ray_env.yaml (`default` in namespace `rayenv`, what `rayenv worker start` creates;
#      created if absent), waits until it is healthy, checks it holds one batch of rollouts, then
#      execs python -m verl.trainer.main_ppo with the same config (--dry-run: prints that command).
# Env hosts join with `rayenv worker start` (or ray start --address=<head> --num-cpus=0
# --resources='{"osworld_env": N}' from the env-host venv). RAY_ADDRESS, or rayenv.address, names the head.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(scripts/verl-venv.sh)
exec "$VENV/bin/python" -m rayenv.verl.smoke "$@"
