"""``rayenv head start|stop``: the cluster side, as an unprivileged user.

The head advertises ``plan.head_ip`` with every port pinned, tolerates ``plan.outage_tolerance``
seconds of silence from a node, and records what an env host must match (``HeadInfo``) where the
env host reads it over ssh.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from pathlib import Path

from .plan import PortPlan
from .preflight import PreflightError
from .raynode import HEAD_DIR, HeadInfo, ray_env, ray_start, stop_node, versions, write_json


def default_token_path() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def ensure_token(path: Path) -> None:
    """Ray's token auth needs the same secret on every node; create it once, readable by the user only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))


def start(plan: PortPlan, temp_dir: Path, token_path: Path) -> HeadInfo:
    ensure_token(token_path)
    done = ray_start(plan.head_start_flags(), temp_dir, ray_env(token_path, plan.head_env()))
    if done.returncode != 0:
        raise PreflightError(f"`ray start --head` failed: {(done.stderr or done.stdout).strip()[-1500:]}",
                             phase="head start", hint="a taken port? see `rayenv tunnel plan` for the ports it needs")
    if plan.relayed:  # relay scheme: 127.0.0.3:Q -> the -R listener 127.0.0.1:Q
        relay = subprocess.Popen(["bash", "-c", plan.relay_command()], start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        HEAD_DIR.mkdir(parents=True, exist_ok=True)  # its own process group: `head stop` ends it by pgid
        (HEAD_DIR / "relay.pid").write_text(str(relay.pid))
    python, ray_version = versions()
    info = HeadInfo(address=plan.head_address, python=python, ray=ray_version, token_path=str(token_path),
                    temp_dir=str(temp_dir), plan=plan)
    write_json(HeadInfo.path(), info.model_dump())
    return info


def stop() -> int:
    """Stop the head started by ``head start`` (only its processes); returns how many ended."""
    try:
        info = HeadInfo.model_validate_json(HeadInfo.path().read_text())
    except OSError:
        return 0
    relay = HEAD_DIR / "relay.pid"
    if relay.exists():
        try:
            os.killpg(int(relay.read_text()), 15)
        except ProcessLookupError:
            pass
        relay.unlink()
    ended = stop_node(Path(info.temp_dir))
    HeadInfo.path().unlink(missing_ok=True)
    return ended


def driver_hint(info: HeadInfo) -> str:
    return (f"export RAY_ADDRESS={info.address} RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={shlex.quote(info.token_path)}")
