"""Episode.act: the one place a model reply becomes desktop steps (rayenv.rollout), specified without Ray.

A fake desktop whose ``.remote`` calls return awaitables stands in for the env actor: it records the
actions it is sent, raises ActionFailed for an action containing ``boom``, reports done on DONE/FAIL
and dies (DesktopUnavailable) on an action containing ``die``. The ARPO worker is the same class
Ray would run, instantiated directly with a fake pool.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rayenv.errors import ActionFailed, DesktopUnavailable, EnvTimeout
from rayenv.pool.handle import Lease
from rayenv.rollout import arpo
from rayenv.rollout.episode import Episode, Turn
from rayenv.rollout.messages import turn_message
from rayenv.rollout.settings import AgentSettings

REPO = Path(__file__).resolve().parents[1]


def png(width: int, height: int, tag: int = 0) -> bytes:
    """Enough of a PNG for png_size (signature + IHDR), plus a tag to tell screens apart."""
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height) + bytes([tag])


async def value(result: Any) -> Any:
    if isinstance(result, BaseException):
        raise result
    return await result if asyncio.iscoroutine(result) else result


class Method:
    def __init__(self, call) -> None:
        self.call = call

    def remote(self, *args: Any):
        return value(self.call(*args))


class FakeDesktop:
    """The env actor's reset/step/evaluate, answered at once."""

    def __init__(self, hang: bool = False) -> None:
        self.sent: list[str] = []
        self.hang = hang
        self.reset = Method(lambda task: {"screenshot": png(1000, 800)})
        self.step = Method(self._step)
        self.evaluate = Method(lambda: 1.0)

    def _step(self, action: str, pause: Any, step_id: str) -> Any:
        if self.hang:
            return asyncio.sleep(3600)  # awaited by value(): a call that never answers
        self.sent.append(action)
        if "boom" in action:
            return ActionFailed("NameError: boom", env="fake-0", phase="step")
        if "die" in action:
            return DesktopUnavailable("the desktop is gone", env="fake-0")
        return {"observation": {"screenshot": png(1000, 800, len(self.sent))}, "reward": 0.0,
                "done": action in ("DONE", "FAIL"), "info": {}}


def code(*lines: str) -> str:
    return "Thinking.\n" + "".join(f"```python\n{line}\n```\n" for line in lines)


def episode(max_turns: int = 15, desktop: FakeDesktop | None = None, **settings: Any) -> Episode:
    run = Episode(Lease(0, 0, "fake-0", desktop or FakeDesktop()), AgentSettings(max_turns=max_turns, **settings))
    asyncio.run(run.reset({"id": "t", "instruction": "do it"}))
    return run


def test_a_reply_with_several_actions_runs_them_in_order_and_returns_the_last_screen():
    run = episode()
    turn = asyncio.run(run.act(code("pyautogui.click(1, 2)", "pyautogui.press('a')")))
    assert run.lease.env.sent == ["pyautogui.click(1, 2)", "pyautogui.press('a')"]
    assert turn.observation == run.observation and turn.observation["screenshot"][-1] == 2
    assert turn.note == "" and not (turn.format_error or turn.action_error or turn.ends) and turn.terminal is None


def test_a_failing_action_stops_the_reply_tells_the_model_and_the_episode_goes_on():
    run = episode()
    turn = asyncio.run(run.act(code("pyautogui.click(1, 2)", "boom()", "pyautogui.press('a')")))
    assert run.lease.env.sent == ["pyautogui.click(1, 2)", "boom()"]  # the action after it never ran
    assert turn.action_error and turn.note == "The action failed: NameError: boom" and not turn.ends
    assert turn.observation["screenshot"][-1] == 1  # the screen after the last action that ran
    message = turn_message(turn, run.observation, image="IMG")
    assert message["content"][0] == {"type": "text", "text": turn.note} and message["content"][1]["image"] == "IMG"


def test_a_first_action_that_fails_leaves_no_new_screen():
    run = episode()
    turn = asyncio.run(run.act(code("boom()")))
    assert turn.action_error and turn.observation is None and run.observation["screenshot"][-1] == 0


def test_an_unparseable_reply_runs_nothing_and_says_why():
    run = episode()
    turn = asyncio.run(run.act("I would click the button."))
    assert run.lease.env.sent == [] and turn.format_error and turn.parsed is None and turn.observation is None
    assert turn.note.startswith("Your reply could not be used: no ```python code block```")
    assert turn_message(turn, run.observation) == {"role": "user", "content": [{"type": "text", "text": turn.note}]}


@pytest.mark.parametrize("word", ["DONE", "FAIL"])
def test_done_or_fail_ends_the_episode_after_the_actions_before_it(word):
    run = episode()
    turn = asyncio.run(run.act(code("pyautogui.click(1, 2)") + f"\n```\n{word}\n```"))
    assert run.lease.env.sent == ["pyautogui.click(1, 2)", word]  # the desktop is told too (OSWorld's contract)
    assert turn.terminal == word and turn.ends and not turn.last


def test_the_max_turns_th_reply_is_the_last_and_unusable_replies_count():
    run = episode(max_turns=3)
    turns = [asyncio.run(run.act(reply)) for reply in ("no action", code("pyautogui.click(1, 2)"), code("x = 1"))]
    assert [t.last for t in turns] == [False, False, True] and turns[-1].ends and turns[-1].terminal is None
    assert run.turns == 3


def test_a_new_reset_starts_the_turn_count_again():
    run = episode(max_turns=1)
    assert asyncio.run(run.act(code("x = 1"))).last
    asyncio.run(run.reset({"id": "t", "instruction": "again"}))
    assert run.turns == 0 and asyncio.run(run.act(code("x = 1"))).last


def test_an_env_failure_is_raised_typed_not_turned_into_a_turn():
    run = episode()
    with pytest.raises(DesktopUnavailable):
        asyncio.run(run.act(code("pyautogui.click(1, 2)", "die()")))


def test_a_step_that_hangs_is_an_env_timeout_in_the_step_phase():
    run = episode(desktop=FakeDesktop(hang=True), step_timeout=0.05)
    with pytest.raises(EnvTimeout) as raised:
        asyncio.run(run.act(code("pyautogui.click(1, 2)")))
    assert raised.value.phase == "step"


def test_act_before_reset_is_refused():
    with pytest.raises(RuntimeError, match="before a successful reset"):
        asyncio.run(Episode(Lease(0, 0, "fake-0", FakeDesktop()), AgentSettings()).act("DONE"))


def test_the_reply_is_parsed_against_the_latest_screen_size():
    seen = []

    def parse(reply: str, screen: tuple[int, int]):
        seen.append(screen)
        from rayenv.rollout.parsers import ParsedReply
        return ParsedReply(["WAIT"])

    run = Episode(Lease(0, 0, "fake-0", FakeDesktop()), AgentSettings(), parse)
    asyncio.run(run.reset({"id": "t", "instruction": "x"}))
    assert isinstance(asyncio.run(run.act("anything")), Turn) and seen == [(1000, 800)]


# -- the ARPO-compatible worker wraps the same driver ------------------------------------------------
class FakePool:
    def __init__(self, desktop: FakeDesktop) -> None:
        self.desktop = desktop
        self.released: list[bool] = []

    async def acquire_async(self, timeout: float | None = None) -> Lease:
        return Lease(0, 0, "fake-0", self.desktop)

    async def release_async(self, lease: Lease, broken: bool = False) -> None:
        self.released.append(broken)


@pytest.fixture
def worker(monkeypatch):
    pool = FakePool(FakeDesktop())
    monkeypatch.setattr(arpo, "connect_pool", lambda settings: pool)
    made = arpo.ARPOEnvWorker.__ray_actor_class__(7, max_steps=2)  # the class Ray runs, without Ray
    made.pool = pool
    return made


def test_the_arpo_worker_steps_through_the_driver_and_stops_at_max_steps(worker):
    async def run() -> list[dict[str, Any]]:
        calls = [worker.reset({"id": "t", "instruction": "do it"}), worker.step("no action here"),
                 worker.step(code("pyautogui.click(1, 2)"))]
        return [pickle.loads(pickle.dumps(await call)) for call in calls]  # as Ray would send each reply

    reset, unusable, last = asyncio.run(run())
    assert reset["env_idx"] == 7 and not reset["is_done"] and len(reset["obs_messages"]) == 2
    assert unusable["format_reward"] == -1.0 and not unusable["is_done"]
    assert worker.history_messages[-2]["role"] == "user"  # the feedback turn, before the next reply
    assert last["is_done"] and last["obs_messages"] is None and worker.pool.desktop.sent == ["pyautogui.click(1, 2)"]
    assert asyncio.run(worker.evaluate()) == 1.0 and worker.pool.released == [False]


def test_the_arpo_worker_shows_the_model_the_screen_after_a_failed_action(worker):
    async def run() -> dict[str, Any]:
        await worker.reset({"id": "t", "instruction": "do it"})
        return await worker.step(code("pyautogui.click(1, 2)", "boom()"))

    out = asyncio.run(run())
    note, image = out["obs_messages"][-1]["content"][:2]
    assert note["text"] == "The action failed: NameError: boom" and image["image"].startswith("data:image/png;base64,")
    assert len(worker.get_history_images()) == 2


def test_the_arpo_worker_reports_a_dead_desktop_and_gives_it_back_broken(worker):
    async def run() -> dict[str, Any]:
        await worker.reset({"id": "t", "instruction": "do it"})
        return await worker.step(code("die()"))

    out = asyncio.run(run())
    assert out["is_done"] and out["env_error"].startswith("DesktopUnavailable") and worker.pool.released == [True]


def test_rollout_imports_no_verl_torch_or_desktop_env():
    script = ("import sys, rayenv.rollout.episode, rayenv.rollout.arpo, rayenv.rollout.messages, "
              "rayenv.rollout.parsers, rayenv.rollout.settings, rayenv.ops.bridge; "
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'verl', 'torch', 'desktop_env'}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
