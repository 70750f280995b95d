"""The verl smoke run up to the trainer: dataset, pool, capacity, then ``verl.trainer.main_ppo``.

``scripts/smoke_verl.sh [--dry-run] [hydra overrides...]`` runs this in the trainer venv. Every step
reads the one composed config (``configs/smoke_ray_env.yaml`` + overrides), so the dataset, the pool
and the trainer agree on every key:

1. writes ``data.train_files`` from ``OSWorld/tasks`` (:mod:`rayenv.verl.dataset`);
2. joins Ray (``rayenv.address``, else ``RAY_ADDRESS``) and finds the pool ``rayenv.pool.name`` —
   ``default`` in namespace ``rayenv``, the one ``rayenv worker start`` creates — or creates it;
3. waits until it is healthy and checks that it holds one batch of rollouts
   (``data.train_batch_size × actor_rollout_ref.rollout.n`` desktops, as ARPO asserts);
4. replaces itself with ``python -m verl.trainer.main_ppo`` (``--dry-run``: prints that command).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CONFIG_NAME = "smoke_ray_env"
EXCLUDED_TASKS = ("infeasible-install-photoshop",)  # needs a network install the smoke run cannot do


class SmokeError(SystemExit):
    """A step that cannot go on; the message says what to change."""


def compose(overrides: list[str], config_dir: Path = REPO / "configs") -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return hydra_compose(config_name=CONFIG_NAME, overrides=overrides)


def write_dataset(cfg: Any, tasks: Path = REPO / "OSWorld" / "tasks") -> Path:
    from ..env.tasks import load_tasks
    from .dataset import build_rows, write_parquet

    return write_parquet(build_rows(load_tasks(tasks), exclude=EXCLUDED_TASKS), cfg.data.train_files)


def resolve_pool(spec: dict[str, Any], timeout: float) -> Any:
    """The named pool, created from ``rayenv.pool`` when absent, once healthy."""
    from ..errors import PoolError
    from ..pool.handle import EnvPool

    try:
        pool = EnvPool.connect(spec["name"], namespace=spec["namespace"])
        print(f"pool {spec['name']!r} found in namespace {spec['namespace']!r}", file=sys.stderr)
    except PoolError:
        print(f"pool {spec['name']!r} not found: creating it", file=sys.stderr)
        pool = EnvPool.create(**spec, provider=spec["desktop"]["provider"])
    pool.wait_healthy(timeout=timeout)
    return pool


def check_capacity(pool: Any, cfg: Any) -> int:
    """Desktops one batch of rollouts leases at once; raises when the pool is smaller."""
    needed = int(cfg.data.train_batch_size) * int(cfg.actor_rollout_ref.rollout.n)
    if pool.size < needed:
        raise SmokeError(f"pool {pool.name!r} has {pool.size} desktops but one batch needs {needed} "
                         f"(data.train_batch_size={cfg.data.train_batch_size} x actor_rollout_ref.rollout.n="
                         f"{cfg.actor_rollout_ref.rollout.n}): grow the pool or lower the batch")
    return needed


def trainer_command(overrides: list[str], config_dir: Path = REPO / "configs") -> list[str]:
    return [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={config_dir}",
            f"--config-name={CONFIG_NAME}", *overrides]


def main(argv: list[str]) -> None:
    import ray
    from omegaconf import OmegaConf

    dry_run = "--dry-run" in argv
    overrides = [arg for arg in argv if arg != "--dry-run"]
    cfg = compose(overrides)
    print(f"dataset: {write_dataset(cfg)}", file=sys.stderr)
    spec = OmegaConf.to_container(cfg.rayenv, resolve=True)
    address = spec["address"] or os.environ.get("RAY_ADDRESS", "auto")
    ray.init(address=address, namespace=spec["pool"]["namespace"], log_to_driver=False)  # main_ppo joins the same
    pool = resolve_pool(spec["pool"], timeout=float(os.environ.get("RAYENV_SMOKE_POOL_TIMEOUT", 1800)))
    needed = check_capacity(pool, cfg)
    print(f"pool {pool.name!r}: {pool.status().healthy} of {pool.size} desktops healthy, a batch leases {needed}",
          file=sys.stderr)
    ray.shutdown()
    command = trainer_command(overrides)
    if dry_run:
        print(shlex.join([f"RAY_ADDRESS={address}", *command]))
        return
    os.execvpe(command[0], command, {**os.environ, "RAY_ADDRESS": address})


if __name__ == "__main__":
    main(sys.argv[1:])
