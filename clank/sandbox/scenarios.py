"""Scenarios: what the simulated users do. Data (steps) plus one seeded churn generator.

A :class:`Scenario` has ``setup`` steps (applied before the sandbox accepts connections, so the
first GUILD_CREATE already shows them), a timed ``script`` run in the sandbox nursery, and an
optional bounded ``churn`` of random actions from a seeded RNG.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import attrs
import trio

from clank.errors import SandboxError
from clank.logging import get_logger
from clank.sandbox.model import ChannelType
from clank.sandbox.world import World

log = get_logger("clank.sandbox.scenarios")


@attrs.frozen
class Step:
    """``action`` by user ``user`` (a name), ``after`` seconds after the previous step."""

    action: str
    user: str
    arg: str | bool | None = None  # channel name (join), on/off (webcam, talk), text (say)
    after: float = 0.0


@attrs.frozen
class ChurnSpec:
    users: tuple[str, ...]
    steps: int
    min_gap: float
    max_gap: float


@attrs.frozen
class Scenario:
    name: str
    description: str
    setup: tuple[Step, ...] = ()
    script: tuple[Step, ...] = ()
    churn: ChurnSpec | None = None


def _voice_channel(world: World, name: object) -> str:
    guild = world.default_guild
    for channel in world.channels_of(guild.id):
        if channel.type is ChannelType.GUILD_VOICE and (name is None or channel.name == name):
            return channel.id
    raise SandboxError(f"no voice channel named {name!r}")


def _text_channel(world: World) -> str:
    return world.text_channel_ids(world.default_guild.id)[0]


async def _join(world: World, user_id: str, arg: object) -> None:
    await world.join_voice(user_id, _voice_channel(world, arg))


async def _leave(world: World, user_id: str, arg: object) -> None:
    await world.leave_voice(user_id)


async def _go_live(world: World, user_id: str, arg: object) -> None:
    await world.go_live(user_id)


async def _stop_stream(world: World, user_id: str, arg: object) -> None:
    await world.stop_stream(user_id)


async def _webcam(world: World, user_id: str, arg: object) -> None:
    await world.set_webcam(user_id, bool(arg))


async def _talk(world: World, user_id: str, arg: object) -> None:
    await world.set_speaking(user_id, bool(arg))


async def _say(world: World, user_id: str, arg: object) -> None:
    await world.post_message(_text_channel(world), user_id, str(arg))


ACTIONS: dict[str, Callable[[World, str, object], Awaitable[None]]] = {
    "join": _join,
    "leave": _leave,
    "go_live": _go_live,
    "stop_stream": _stop_stream,
    "webcam": _webcam,
    "talk": _talk,
    "say": _say,
}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("empty", "nobody else in voice"),
        Scenario(
            "streamer",
            "alice is in voice and live from the start",
            setup=(Step("join", "alice", "General"), Step("go_live", "alice")),
        ),
        Scenario(
            "demo",
            "alice joins, talks and goes live; bob joins with his webcam on",
            script=(
                Step("join", "alice", "General", after=1.0),
                Step("talk", "alice", True, after=0.5),
                Step("say", "alice", "hey, let me show you something", after=0.5),
                Step("go_live", "alice", after=2.0),
                Step("join", "bob", "General", after=2.0),
                Step("webcam", "bob", True, after=0.5),
            ),
        ),
        Scenario(
            "churn",
            "simulated users join, leave, go live and stop in a seeded loop",
            churn=ChurnSpec(users=("alice", "bob", "carol"), steps=200, min_gap=0.2, max_gap=2.0),
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise SandboxError(f"unknown scenario {name!r} (known: {', '.join(sorted(SCENARIOS))})") from None


async def run_step(world: World, step: Step) -> None:
    action = ACTIONS.get(step.action)
    if action is None:
        raise SandboxError(f"unknown scenario action {step.action!r}")
    user = world.user_by_name(step.user)
    log.info("scenario step", action=step.action, user=step.user)
    await action(world, user.id, step.arg)


async def apply_setup(world: World, scenario: Scenario) -> None:
    for step in scenario.setup:
        await run_step(world, step)


def churn_step(world: World, spec: ChurnSpec, rng: random.Random) -> Step:
    """Pick one action that is valid in the current state."""
    name = rng.choice(spec.users)
    user = world.user_by_name(name)
    state = world.voice_state(user.id)
    if state is None:
        channels = [c.name for c in world.channels.values() if c.type is ChannelType.GUILD_VOICE]
        return Step("join", name, rng.choice(sorted(channels)))
    streaming = world.stream_of(user.id) is not None
    choices = ["leave", "stop_stream" if streaming else "go_live", "webcam"]
    action = rng.choice(choices)
    if action == "webcam":
        return Step("webcam", name, not state.self_video)
    return Step(action, name)


async def run_scenario(world: World, scenario: Scenario, rng: random.Random) -> None:
    """The timed part of a scenario; returns when its script and churn are done."""
    for step in scenario.script:
        await trio.sleep(step.after)
        await run_step(world, step)
    spec = scenario.churn
    if spec is not None:
        for _ in range(spec.steps):
            await trio.sleep(rng.uniform(spec.min_gap, spec.max_gap))
            await run_step(world, churn_step(world, spec, rng))
