"""``clank run``: the composition root.

    root scope (Ctrl-C / SIGTERM cancels it; everything below unwinds in order, bounded)
     ├─ sandbox                 sandbox mode only: the local Discord, in-process
     ├─ gateway client          main gateway session
     │    └─ feed_directory     dispatches → Go Live registry + member directory
     ├─ voice session           the session nursery with its role nurseries
     ├─ share-link fallback     control/link_wiring.py: its listener and LinkFlow supervision
     ├─ HTTP API + dashboard    ClankService over the live session
     └─ demo agent              sandbox mode: watches and publishes like an agent would
                                (control/demo.py: start_screen_watch, play_music; a sandbox viewer)

This is the only product module besides the CLI that may import the sandbox (layering test).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

import attrs
import trio

from clank import __version__
from clank.config import ApiSettings, Settings
from clank.control.auto_watch import run_auto_watch
from clank.control.demo import run_demo
from clank.control.link_wiring import open_link_flow
from clank.control.service import ClankService
from clank.control.session_port import DIRECTORY_EVENTS, LiveSessionPort, MemberDirectory, feed_directory
from clank.control.voice_api import VoiceApi, session_voice_role
from clank.control.voice_channels import (
    CHANNEL_EVENTS,
    ChannelDirectory,
    CurrentSession,
    feed_channels,
    open_voice_channels,
    rewatch_after_move,
)
from clank.errors import ConfigError
from clank.io.channel_check import check_voice_channel
from clank.io.gateway import GatewayClient, open_gateway_client
from clank.io.gateway_url import discover_gateway_url
from clank.io.groups import raise_single
from clank.io.user_names import open_user_names
from clank.logging import get_logger, register_secret
from clank.protocol.streams import StreamRegistry
from clank.session.voice_session import VoiceSession
from clank.session.watch_handle import WatchHandle
from clank.watch.commentary import (
    CommentaryCues,
    CommentaryHub,
    SpeakingSource,
    commentary_policy,
    note_policy,
    run_notes_with_cues,
)
from clank.watch.notes import ScreenNotes
from clank.watch.vision import open_vision_provider

if TYPE_CHECKING:
    from clank.control.http import HttpApi
    from clank.sandbox.app import Sandbox

log = get_logger("clank.run")

DISPATCH_BUFFER: Final = 1024
#: Seconds for the whole shutdown (leave voice, close streams, stop servers).
SHUTDOWN_BUDGET: Final = 2.0
#: How long the banner waits for the voice leg (a websocket connect gives up after 10 s).
VOICE_READY_WAIT: Final = 12.0
#: In the sandbox demo, how long the banner waits for both demo watches' first frames and a viewer
#: of our Go Live (``demo_settled``), so it is the last start-up line.
DEMO_FIRST_FRAME_WAIT: Final = 12.0
#: GIL hand-off interval. Python's default (5 ms) lets a decode worker's Python code (JPEG,
#: metrics) hold the GIL for up to 5 ms while the trio thread waits to send the next 20 ms audio
#: frame; 0.5 ms keeps audio pacing p99 near 2 ms beside busy threads (bench/bench_voice.py).
GIL_SWITCH_INTERVAL: Final = 0.0005


@attrs.frozen
class RunInfo:
    """What is running, for the startup banner and for tests that drive ``run_clank``."""

    mode: str
    api: HttpApi
    user_id: str
    guild_id: str
    channel_id: str
    sandbox_api_url: str | None = None
    scenario: str | None = None
    service: ClankService | None = attrs.field(default=None, repr=False, eq=False)
    sandbox: Sandbox | None = attrs.field(default=None, repr=False, eq=False)
    commentary: CommentaryHub | None = attrs.field(default=None, repr=False, eq=False)
    share_url: str | None = None


def _with_sandbox(settings: Settings, sandbox: Sandbox) -> Settings:
    discord = attrs.evolve(
        settings.discord,
        token=sandbox.token,
        api_url=sandbox.api_url,
        gateway_url=sandbox.gateway_url,
        guild_id=sandbox.guild_id,
        voice_channel_id=sandbox.voice_channel_id,
        voice_url_scheme="ws",
    )
    return attrs.evolve(settings, discord=discord)


def _speaking_users(channels: Any) -> frozenset[str]:
    """Who is heard in the voice channel now (the voice role's inbound speaking state)."""
    role = session_voice_role(channels.current)
    return frozenset() if role is None else role.speaking_users()


def _notes_factory(
    settings: Settings, provider: Any, nursery: trio.Nursery, hub: CommentaryHub, speaking: SpeakingSource
) -> Callable[..., ScreenNotes] | None:
    if not settings.notes.enabled or provider is None:
        return None
    policy = note_policy(settings.notes)
    gates = commentary_policy(settings.notes)

    def start(handle: Any, name: str, kind: str) -> ScreenNotes:
        cues = CommentaryCues(hub, gates, target_user_id=handle.target_user_id, kind=kind, speaking=speaking)
        notes = ScreenNotes(
            provider,
            policy=policy,
            user_id=handle.target_user_id,
            user_name=name,
            stream_type="screen" if kind == "go_live" else "camera",
            on_frame=cues.observe,
        )
        cues.notes = notes
        # A watch's notes live in the watch's scope (end with it); a share link's in ours.
        spawn = handle.start_soon if isinstance(handle, WatchHandle) else nursery.start_soon
        spawn(partial(run_notes_with_cues, notes, cues, handle.frames))
        return notes

    return start


async def _stop_on_signals(stop: trio.Event, scope: trio.CancelScope) -> None:
    """First Ctrl-C / SIGTERM: orderly shutdown (leave voice, close streams), bounded by
    SHUTDOWN_BUDGET; past the budget, or on a second signal, everything is cancelled."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if stop.is_set():
                scope.cancel()
                return
            log.info("shutting down", signal=signal.Signals(signum).name)
            stop.set()
            scope.deadline = min(scope.deadline, trio.current_time() + SHUTDOWN_BUDGET + 1.0)


async def _sandbox_viewer(sandbox: Sandbox, stream_key: str) -> object:
    """The demo's viewer of our Go Live: the sandbox's ``bob`` joins voice and watches it."""
    bob = next((u.id for u in sandbox.world.users.values() if u.name == "bob"), None)
    if bob is None or sandbox.media is None:
        return None
    state = sandbox.world.voice_state(bob)
    if state is None or state.channel_id != sandbox.voice_channel_id:
        await sandbox.world.join_voice(bob, sandbox.voice_channel_id)
    return await sandbox.media.start_viewer(bob, stream_key)


def _voice_role(service: ClankService | None) -> dict[str, Any] | None:
    if service is None:
        return None
    return next((r for r in service.status()["roles"] if r["name"] == "voice"), None)


async def wait_until_settled(info: RunInfo, *, demo_watch: bool) -> str | None:
    """Wait (bounded) until the voice leg is connected — and, in the sandbox demo, until the demo
    watch shows its first frame — so the banner comes after the start-up lines. Returns None when
    voice is connected, else what the voice leg is doing and why (for the banner, and a warning)."""
    with trio.move_on_after(VOICE_READY_WAIT):
        while True:
            voice = _voice_role(info.service)
            if voice is not None and voice["state"] in ("ready", "failed", "disconnected"):
                break
            await trio.sleep(0.1)
    voice = _voice_role(info.service)
    if voice is None or voice["state"] != "ready":
        state = "not started" if voice is None else voice["state"]
        reason = (voice or {}).get("endedReason") or "no answer yet"
        problem = f"{state}: {reason}"
        log.warning("voice not connected", state=state, reason=reason)
        return problem
    if demo_watch and info.sandbox is not None and info.service is not None:
        with trio.move_on_after(DEMO_FIRST_FRAME_WAIT):
            while True:  # polling the status (cheap): no event exists for "the demo is up"
                if demo_settled(info.service.status()):
                    break
                await trio.sleep(0.1)
    return None


def demo_settled(status: Mapping[str, Any]) -> bool:
    """The sandbox demo is up: the streamer's and the webcam's watches both show a frame, and a
    sandbox viewer watches our Go Live — so the banner is the last thing the start-up prints."""
    framed = [w for w in status.get("watches", ()) if w.get("frameSequence")]
    viewers = [
        r
        for r in status.get("roles", ())
        if r.get("name") == "stream_publish" and (r.get("qos") or {}).get("viewers")
    ]
    return len(framed) >= 2 and bool(viewers)


def print_banner(info: RunInfo, out: TextIO, *, voice_problem: str | None = None) -> None:
    lines = [f"clank {__version__} — {info.mode} mode"]
    if info.sandbox_api_url:
        lines.append(f"  sandbox    local Discord at {info.sandbox_api_url} (scenario {info.scenario!r})")
    where = f"channel {info.channel_id} in guild {info.guild_id} as user {info.user_id}"
    lines += [
        f"  voice      joined {where}"
        if voice_problem is None
        else f"  voice      NOT CONNECTED to {where} — {voice_problem}",
        f"  dashboard  {info.api.dashboard_url}",
        *([f"  share link fallback listening at {info.share_url}/share/…"] if info.share_url else []),
        f"  api        {info.api.url}/api   (Authorization: Bearer {info.api.token})",
        "  tools      `clank tools` prints the agent tool schemas",
        "  Ctrl-C leaves voice and exits.",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


@attrs.frozen
class _Composed:
    """What :func:`_compose` brought up (the parts ``open_clank`` adds its API and demo to)."""

    service: ClankService
    session: VoiceSession
    registry: StreamRegistry
    mode: str
    user_id: str
    settings: Settings
    scenario: str | None
    sandbox: Sandbox | None
    commentary: CommentaryHub | None = None
    share_url: str | None = None


@contextlib.asynccontextmanager
async def _compose(settings: Settings, *, scenario: str | None) -> AsyncIterator[_Composed]:
    """Sandbox (sandbox mode) → main gateway → Go Live registry → voice session → ClankService."""
    async with contextlib.AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        sandbox = None
        mode = "discord"
        if settings.sandbox_mode:
            from clank.sandbox.app import open_sandbox

            mode = "sandbox"
            scenario = scenario or settings.sandbox.scenario
            sandbox = await stack.enter_async_context(
                open_sandbox(
                    host=settings.sandbox.host,
                    port=settings.sandbox.port,
                    scenario=scenario,
                    seed=settings.sandbox.seed,
                    dave_protocol_version=settings.sandbox.dave_protocol_version,
                )
            )
            settings = _with_sandbox(settings, sandbox)
        discord = settings.discord
        if not (discord.guild_id and discord.voice_channel_id):
            raise ConfigError(
                "discord.guild_id",
                "a guild and voice channel to join (set CLANK_GUILD_ID and CLANK_CHANNEL_ID)",
            )
        register_secret(discord.token)
        await check_voice_channel(discord.api_url, discord.token, discord.guild_id, discord.voice_channel_id)
        gateway: GatewayClient = await stack.enter_async_context(
            open_gateway_client(
                url=await discover_gateway_url(settings),
                token=discord.token,
                properties=attrs.asdict(discord.properties),
                capabilities=discord.capabilities,
                compress=discord.compress,
                max_initial_attempts=discord.connect_attempts,
            )
        )
        dispatches = stack.enter_context(gateway.subscribe(DISPATCH_BUFFER, events=DIRECTORY_EVENTS))
        channel_directory = ChannelDirectory()
        channel_dispatches = stack.enter_context(gateway.subscribe(DISPATCH_BUFFER, events=CHANNEL_EVENTS))
        nursery.start_soon(feed_channels, channel_dispatches, channel_directory)
        ready = await gateway.wait_ready()
        registry = StreamRegistry(ready.user_id, guild_ids=[discord.guild_id])
        # Ids the gateway never names are looked up through GET /users/{id} (io/user_names.py).
        names = await stack.enter_async_context(open_user_names(discord.api_url, discord.token))
        directory = MemberDirectory(names)
        nursery.start_soon(feed_directory, dispatches, registry, directory)

        provider = None
        if settings.notes.enabled:
            provider = await stack.enter_async_context(
                open_vision_provider(
                    settings.notes.provider,
                    url=settings.notes.url,
                    model=settings.notes.model,
                    api_key=settings.notes.api_key,
                    timeout_s=settings.notes.timeout_s,
                )
            )
        channels = await stack.enter_async_context(
            open_voice_channels(
                gateway,
                settings=settings,
                registry=registry,
                directory=channel_directory,
                name_of=directory.name_of,
            )
        )
        await channels.start(discord.guild_id, discord.voice_channel_id)
        # The session we are in now: join/move/leave over the API replace it (voice_channels.py).
        session = cast(VoiceSession, CurrentSession(channels, ready.user_id, settings))
        commentary = CommentaryHub()  # commentary_due cues of every watch (watch/commentary.py)
        notes_nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(notes_nursery.cancel_scope.cancel)
        notes_factory = _notes_factory(
            settings, provider, notes_nursery, commentary, partial(_speaking_users, channels)
        )
        port = LiveSessionPort(session, registry, directory, mode=mode, notes_factory=notes_factory)
        links, share_url = await stack.enter_async_context(
            open_link_flow(
                settings,
                port,
                session,
                registry,
                directory,
                sandbox_text_channel_id=None if sandbox is None else str(sandbox.text_channel_id),
                notes_factory=notes_factory,
            )
        )
        voice = VoiceApi(
            lambda: session_voice_role(channels.current),
            known_users=lambda: {m.user_id for m in directory.members()} | channel_directory.user_ids(),
            channels=channels,
        )
        service = ClankService(port, links, voice=voice)
        channels.watched_users = lambda: {w.user_id for w in port.watches() if w.state != "ended"}
        channels.after_move = partial(rewatch_after_move, service, channels)
        if settings.watch.auto_watch:
            nursery.start_soon(run_auto_watch, service)
        yield _Composed(
            service=service,
            session=session,
            registry=registry,
            mode=mode,
            user_id=ready.user_id,
            settings=settings,
            scenario=scenario,
            sandbox=sandbox,
            commentary=commentary,
            share_url=share_url,
        )


@contextlib.asynccontextmanager
async def open_session(settings: Settings, *, scenario: str | None = None) -> AsyncIterator[ClankService]:
    """The embedder's entry point: join voice and yield the agent surface (``ClankService``).

        settings = clank.load_settings()          # no token configured: the built-in sandbox
        async with clank.open_session(settings) as service:
            print(await service.start_screen_watch())

    With no ``discord.token`` the local sandbox runs in-process (``scenario`` picks its world,
    default ``sandbox.scenario``). On exit clank leaves voice and closes everything, bounded.
    Unlike ``clank run`` no HTTP API, dashboard or demo agent is started. A failure to come up
    raises one of clank's errors (``clank.ClankError``), not an exception group; several at once
    propagate as the group (clank/io/groups.py).
    """
    try:
        async with _compose(settings, scenario=scenario) as composed:
            yield composed.service
    except BaseExceptionGroup as group:
        raise_single(group)


@contextlib.asynccontextmanager
async def open_clank(
    settings: Settings,
    *,
    scenario: str | None = None,
    api_port: int | None = None,
    demo_watch: bool = True,
) -> AsyncIterator[RunInfo]:
    """Bring up everything ``clank run`` runs; yields once the API serves and voice is joined."""
    try:
        async with _open_clank(settings, scenario=scenario, api_port=api_port, demo_watch=demo_watch) as info:
            yield info
    except BaseExceptionGroup as group:
        raise_single(group)


@contextlib.asynccontextmanager
async def _open_clank(
    settings: Settings, *, scenario: str | None, api_port: int | None, demo_watch: bool
) -> AsyncIterator[RunInfo]:
    async with contextlib.AsyncExitStack() as stack:
        composed = await stack.enter_async_context(_compose(settings, scenario=scenario))
        # The HTTP API (with MCP, a heavy import) only now: open_session's embedders never load
        # it, and a session that cannot start fails without it.
        from clank.control.http import generate_api_token, open_http_api

        settings = composed.settings
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        service = composed.service
        api_settings: ApiSettings = settings.api
        if api_port is not None:
            api_settings = attrs.evolve(api_settings, port=api_port)
        api = await stack.enter_async_context(
            open_http_api(
                service,
                api_settings,
                token=settings.api.token or generate_api_token(),
                commentary=composed.commentary,
            )
        )
        sandbox = composed.sandbox
        if sandbox is not None and demo_watch:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            viewer = partial(_sandbox_viewer, sandbox)
            nursery.start_soon(run_demo, service, composed.user_id, composed.registry, viewer, folder)
        yield RunInfo(
            mode=composed.mode,
            api=api,
            user_id=composed.user_id,
            guild_id=settings.discord.guild_id,
            channel_id=settings.discord.voice_channel_id,
            sandbox_api_url=None if sandbox is None else sandbox.api_url,
            scenario=composed.scenario,
            service=service,
            sandbox=sandbox,
            commentary=composed.commentary,
            share_url=composed.share_url,
        )


async def run_mcp(settings: Settings, args: Any = None) -> None:
    """``clank mcp``: everything ``clank run`` runs (no demo watch: the agent drives), with the MCP
    protocol on stdin/stdout until the client closes it. Logs and the banner go to stderr."""
    from clank.control.mcp_server import open_mcp_stdio, serve_mcp

    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    api_port = getattr(args, "port", None)
    async with (
        open_mcp_stdio() as streams,
        open_clank(
            settings,
            scenario=getattr(args, "scenario", None),
            api_port=0 if api_port is None else api_port,
            demo_watch=False,
        ) as info,
    ):
        assert info.service is not None
        print_banner(info, sys.stderr)
        await serve_mcp(info.service, streams, commentary=info.commentary)


async def run_clank(settings: Settings, args: Any = None) -> None:
    """Run until Ctrl-C / SIGTERM; print what runs and where the dashboard is."""
    scenario = getattr(args, "scenario", None)
    api_port = getattr(args, "port", None)
    demo_watch = not getattr(args, "no_watch", False)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    stop = trio.Event()
    with trio.CancelScope() as root:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, stop, root)
            async with open_clank(
                settings, scenario=scenario, api_port=api_port, demo_watch=demo_watch
            ) as info:
                problem = await wait_until_settled(info, demo_watch=demo_watch)
                log.info("clank running", mode=info.mode, dashboard=info.api.url)
                print_banner(info, sys.stdout, voice_problem=problem)  # last: it must not scroll away
                await stop.wait()
                started = trio.current_time()
            log.info("clank stopped", shutdown_s=round(trio.current_time() - started, 3))
            nursery.cancel_scope.cancel()
