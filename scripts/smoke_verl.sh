#!/usr/bin/env bash
# The verl smoke run against a rayenv pool, on a GPU box that is (or joins) the Ray head.
#   1. the trainer venv (scripts/verl-venv.sh; on a GPU box set RAYENV_TORCH to your CUDA torch),
#   2. the dataset: OSWorld/tasks -> data/osworld/train.parquet (rayenv.verl.dataset),
#   3. the pool named in configs/smoke_ray_env.yaml (`rayenv.pool`), created if absent and waited for,
#   4. python -m verl.trainer.main_ppo with that config; extra arguments are Hydra overrides, e.g.
#        scripts/smoke_verl.sh actor_rollout_ref.model.path=/models/UI-TARS-1.5-7B rayenv.pool.size=8
# Env hosts must already have joined: ray start --address=<head> --num-cpus=0 --resources='{"osworld_env": N}'
# (from the env-host venv, scripts/bootstrap.sh). RAY_ADDRESS, or rayenv.address in the config, names the head.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(scripts/verl-venv.sh)
PY=$VENV/bin/python
"$PY" -m rayenv.verl.dataset OSWorld/tasks data/osworld/train.parquet --exclude infeasible-install-photoshop
ADDRESS=$("$PY" - "$@" <<'PYEOF'
"""Create (or find) the smoke pool from the composed config, so pool and trainer agree on every key."""
import os, sys
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
import ray
from rayenv import EnvPool

with initialize_config_dir(config_dir=os.path.abspath("configs"), version_base=None):
    cfg = compose(config_name="smoke_ray_env", overrides=sys.argv[1:])
spec = OmegaConf.to_container(cfg.rayenv, resolve=True)
address = spec["address"] or os.environ.get("RAY_ADDRESS", "auto")
ray.init(address=address, namespace=spec["pool"]["namespace"])
pool_cfg = spec["pool"]
try:
    pool = EnvPool.connect(pool_cfg["name"], namespace=pool_cfg["namespace"])
except Exception:  # noqa: BLE001 - not there yet: create it
    pool = EnvPool.create(**pool_cfg, provider=pool_cfg["desktop"]["provider"])
pool.wait_healthy(timeout=1800)
print(f"pool {pool_cfg['name']!r} ready: {pool.status()['healthy']} desktops", file=sys.stderr)
print(address)  # the head main_ppo joins
PYEOF
)
export RAY_ADDRESS=$ADDRESS
exec "$PY" -m verl.trainer.main_ppo --config-path="$PWD/configs" --config-name=smoke_ray_env "$@"
