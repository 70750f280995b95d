"""scripts/smoke_verl.sh --dry-run against the pool an env host's `rayenv worker start` creates (issue 10).

A two-venv cluster as in tests/test_verl_e2e.py: the head from the trainer venv, an env node from the
env-host venv advertising ``osworld_env``. ``rayenv worker start`` cannot run on one machine without
a second network namespace (its supervisor reaches the head only through its ssh tunnel, whose
forwards bind the head's own ports), so the pool is created the way its env-host driver
(``rayenv.tunnel.envhost_driver create``) does: ``PoolConfig.load(name=--pool, size=--size,
provider=--provider, namespace=--namespace)`` with the command's defaults, then ``EnvPool.create``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_verl_e2e import envhost_python, trainer_python  # noqa: E402

SIZE = 2
WORKER_START_POOL = """
import sys, ray
from rayenv.pool.config import DEFAULT_NAMESPACE, PoolConfig
from rayenv.pool.handle import EnvPool
ray.init(address=sys.argv[1], namespace=DEFAULT_NAMESPACE, log_to_driver=False)
if sys.argv[2] == "create":  # what `rayenv worker start --size 2 --provider process` asks envhost_driver for
    config = PoolConfig.load(None, name="default", size=int(sys.argv[3]), provider="process", namespace=DEFAULT_NAMESPACE)
    EnvPool.create(config=config)
else:
    EnvPool.connect("default", DEFAULT_NAMESPACE).shutdown()
"""

pytestmark = [pytest.mark.slow, pytest.mark.verl]


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory):
    from rayenv.tools.localcluster import ray_cluster

    envhost = envhost_python()
    with ray_cluster(tmp_path_factory.mktemp("smoke"), base_port=28000, head_python=str(trainer_python()),
                     env_python=str(envhost), env_units=SIZE, head_cpus=1) as cluster:
        pool = lambda *args: subprocess.run([str(envhost), "-c", WORKER_START_POOL, cluster.address, *args],  # noqa: E731
                                            env=cluster.env(), capture_output=True, text=True, timeout=600)
        created = pool("create", str(SIZE))
        assert created.returncode == 0, created.stderr[-3000:]
        yield cluster
        pool("shutdown")


def smoke(cluster, tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    data = tmp_path / "train.parquet"
    return subprocess.run([str(REPO / "scripts" / "smoke_verl.sh"), "--dry-run", f"data.train_files={data}",
                           f"data.val_files={data}", *overrides], capture_output=True, text=True, timeout=600,
                          env={**cluster.env(), "RAYENV_SMOKE_POOL_TIMEOUT": "120"})


def test_the_dry_run_finds_the_worker_pool_checks_capacity_and_prints_the_trainer_command(worker_pool, tmp_path):
    done = smoke(worker_pool, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pool 'default' found in namespace 'rayenv'" in done.stderr
    assert f"pool 'default': {SIZE} of {SIZE} desktops healthy, a batch leases 2" in done.stderr
    assert (tmp_path / "train.parquet").exists()
    command = done.stdout.strip().splitlines()[-1]
    assert command.startswith(f"RAY_ADDRESS={worker_pool.address} ")
    assert f"-m verl.trainer.main_ppo --config-path={REPO / 'configs'} --config-name=smoke_ray_env" in command
    assert f"data.train_files={tmp_path / 'train.parquet'}" in command


def test_a_batch_larger_than_the_pool_is_refused_with_what_to_change(worker_pool, tmp_path):
    done = smoke(worker_pool, tmp_path, "data.train_batch_size=3")
    assert done.returncode != 0
    assert "pool 'default' has 2 desktops but one batch needs 3" in done.stderr
    assert "main_ppo" not in done.stdout


def test_a_second_pool_beside_the_worker_pool_fails_at_once_naming_the_free_units(worker_pool, tmp_path):
    done = smoke(worker_pool, tmp_path, "rayenv.pool.name=verl-smoke", "rayenv.pool.size=2",
                 "rayenv.pool.desktop.provider=process")
    assert done.returncode != 0
    assert "advertises 2 'osworld_env', 0 of them free, but the pool needs 2" in done.stderr
