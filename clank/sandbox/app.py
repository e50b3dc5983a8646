"""Open a whole local Discord: REST + main gateway on one port, a world, a scenario, fault controls.

    async with open_sandbox(scenario="streamer") as sb:
        sb.api_url, sb.gateway_url, sb.token ...
        await sb.world.go_live(...)
        sb.faults.send_reconnect(sb.our_user_id)

REST lives under ``/api/v{9,10}``; the gateway websocket is at ``/`` (``ws://host:port/?v=9&encoding=json``).
The voice and stream servers plug in through ``media_backend`` (see :mod:`clank.sandbox.media`).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from functools import partial
from typing import Any, TextIO, cast

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.routing import WebSocketRoute

from clank.errors import SandboxError
from clank.io.fakenet import FakeNet
from clank.io.listen import listen_failed
from clank.logging import get_logger
from clank.sandbox.asgi_bridge import asgi_websocket_handler
from clank.sandbox.faults import Faults
from clank.sandbox.fidelity import STRICT, FidelityRules
from clank.sandbox.gateway import GatewayServer
from clank.sandbox.hub import DispatchHub
from clank.sandbox.ids import IdFactory
from clank.sandbox.media import MediaBackend, NullMediaBackend
from clank.sandbox.rest import RestApi, build_app
from clank.sandbox.rtc.backend import RtcMediaBackend, RtcSettings, open_rtc_backend
from clank.sandbox.rtc.server import MediaServerConfig
from clank.sandbox.rtc.viewer import viewer_routes
from clank.sandbox.scenarios import apply_setup, get_scenario, run_scenario
from clank.sandbox.tls import open_sandbox_tls
from clank.sandbox.world import World

log = get_logger("clank.sandbox")

# Bound on stopping: connections are closed (1001) first, so this is rarely reached.
SHUTDOWN_TIMEOUT = 5.0
HTTP_GRACEFUL_TIMEOUT = 1.0
#: What to change when the sandbox's address is taken (named in the one-line error).
LISTEN_CHANGE = "sandbox.port / CLANK_SANDBOX_PORT, or clank sandbox --port (0 = any free port)"


@attrs.frozen
class Sandbox:
    """A running sandbox. Tokens are kept out of the repr."""

    world: World = attrs.field(repr=False)
    faults: Faults = attrs.field(repr=False)
    api_url: str
    gateway_url: str
    token: str = attrs.field(repr=False)
    bot_token: str = attrs.field(repr=False)
    our_user_id: str
    bot_user_id: str
    guild_id: str
    voice_channel_id: str
    text_channel_id: str
    media: RtcMediaBackend | None = attrs.field(default=None, repr=False)
    """The voice/stream servers and simulated media (None when a custom or null backend is used)."""
    ca_file: str | None = None
    """With ``tls=True``: the throwaway CA (PEM) that signs the voice/stream servers' certificate."""
    rest: RestApi | None = attrs.field(default=None, repr=False)
    """The REST handlers (fault knobs such as ``rate_limit_user_lookups``; lookup counters)."""

    def info(self) -> dict[str, Any]:
        """The JSON line ``clank sandbox`` prints (contains the tokens: for the local client only)."""
        tls = {} if self.ca_file is None else {"ca_file": self.ca_file}
        return {
            **tls,
            "api_url": self.api_url,
            "gateway_url": self.gateway_url,
            # Voice/stream endpoints are announced without a scheme (as Discord does); this is
            # the one to use with them (clank: discord.voice_url_scheme).
            "voice_url_scheme": "ws" if self.ca_file is None else "wss",
            "token": self.token,
            "bot_token": self.bot_token,
            "our_user_id": self.our_user_id,
            "guild_id": self.guild_id,
            "voice_channel_id": self.voice_channel_id,
            "text_channel_id": self.text_channel_id,
            "users": [{"id": u.id, "name": u.name} for u in self.world.users.values()],
        }


def _port_from_binds(binds: list[str]) -> int:
    for bind in binds:
        _, _, port = bind.rpartition(":")
        if port.isdigit():
            return int(port)
    raise SandboxError(f"sandbox HTTP server reported no port: {binds!r}")


@asynccontextmanager
async def open_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    scenario: str = "empty",
    heartbeat_interval_ms: int = 41250,
    seed: int = 0,
    media_backend: MediaBackend | None = None,
    media: bool = True,
    tls: bool = False,
    dave_protocol_version: int = 1,
    net: FakeNet | None = None,
    fidelity: FidelityRules = STRICT,
) -> AsyncIterator[Sandbox]:
    """Start the sandbox; on exit, close every gateway connection and stop the server.

    With ``net`` (tests) the main gateway and the voice/stream servers listen on that in-memory
    network (:mod:`clank.io.fakenet`) instead of real sockets, and REST is not served.

    Voice and stream servers with simulated media (``sb.media``) run unless ``media`` is False
    or another ``media_backend`` is given. With ``tls`` they serve ``wss://`` with a throwaway
    certificate whose CA is ``sb.ca_file`` (for clients that hard-code ``wss://{endpoint}``).
    ``dave_protocol_version`` 0 turns DAVE off on its voice and stream servers. ``fidelity``: how
    closely they imitate Discord (:mod:`clank.sandbox.fidelity`; ``LENIENT`` only for a test that
    says why).
    """
    get_scenario(scenario)  # refuse unknown names before anything starts (a plain SandboxError)
    if media_backend is not None or not media:
        if tls:
            raise SandboxError("tls=True needs the sandbox's own voice/stream servers")
        backend = media_backend or NullMediaBackend()
        async with _open_sandbox(
            host, port, scenario, heartbeat_interval_ms, seed, backend, None, net
        ) as sandbox:
            yield sandbox
        return
    with ExitStack() as stack:
        minted = stack.enter_context(open_sandbox_tls()) if tls else None
        ssl_context = None if minted is None else minted.server_context()
        settings = RtcSettings(
            server=MediaServerConfig(
                seed=seed,
                ssl_context=ssl_context,
                dave_protocol_version=dave_protocol_version,
                net=net,
                fidelity=fidelity,
            )
        )
        async with (
            open_rtc_backend(settings) as rtc,
            _open_sandbox(host, port, scenario, heartbeat_interval_ms, seed, rtc, rtc, net) as sandbox,
        ):
            yield sandbox if minted is None else attrs.evolve(sandbox, ca_file=str(minted.ca_file))


@asynccontextmanager
async def _open_sandbox(
    host: str,
    port: int,
    scenario: str,
    heartbeat_interval_ms: int,
    seed: int,
    media_backend: MediaBackend,
    rtc: RtcMediaBackend | None,
    net: FakeNet | None = None,
) -> AsyncIterator[Sandbox]:
    chosen = get_scenario(scenario)
    ids = IdFactory(seed)
    hub = DispatchHub()
    world = World(hub, media_backend, ids)
    if rtc is not None:
        rtc.bind_world(world)
    await apply_setup(world, chosen)
    gateway = GatewayServer(world, hub, ids, heartbeat_interval_ms)
    api = RestApi(world)
    viewers = [] if rtc is None else viewer_routes(rtc)  # GET /sandbox/viewers (rtc/viewer.py)
    app = build_app(api, [WebSocketRoute("/", gateway.handle), *viewers])
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = HTTP_GRACEFUL_TIMEOUT
    config.errorlog = logging.getLogger("hypercorn.error")  # through clank's logging setup
    config.accesslog = None
    stop_http = trio.Event()
    # cast: hypercorn's ASGI typing and Starlette's are structurally equal but nominally distinct.
    fake_scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        if net is not None:
            bound_port = await nursery.start(_serve_fake, net, gateway, host, port, fake_scope)
        else:
            try:
                binds = await nursery.start(
                    partial(serve, cast(Any, app), config, shutdown_trigger=stop_http.wait)
                )
            except (OSError, BaseExceptionGroup) as exc:
                error = listen_failed(exc, host, port, LISTEN_CHANGE)
                if error is None:
                    raise
                raise error from None
            bound_port = _port_from_binds(binds)
        gateway.public_url = api.gateway_url = f"ws://{host}:{bound_port}/"
        guild = world.default_guild
        sandbox = Sandbox(
            world=world,
            faults=Faults(hub),
            api_url=f"http://{host}:{bound_port}/api",
            gateway_url=gateway.public_url,
            token=world.our_user.token,
            bot_token=world.bot_user.token,
            our_user_id=world.our_user.id,
            bot_user_id=world.bot_user.id,
            guild_id=guild.id,
            voice_channel_id=world.voice_channel_ids(guild.id)[0],
            text_channel_id=world.text_channel_ids(guild.id)[0],
            media=rtc,
            rest=api,
        )
        scenario_scope = trio.CancelScope()

        async def run_chosen_scenario() -> None:
            with scenario_scope:
                await run_scenario(world, chosen, ids.choice_rng())

        nursery.start_soon(run_chosen_scenario)
        log.info("sandbox ready", api_url=sandbox.api_url, scenario=scenario)
        try:
            yield sandbox
        finally:
            scenario_scope.cancel()
            gateway.shutdown()
            stop_http.set()
            fake_scope.cancel()
            nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_TIMEOUT


async def _serve_fake(
    net: FakeNet,
    gateway: GatewayServer,
    host: str,
    port: int,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The main gateway on the fake network (until ``scope`` is cancelled); reports the port."""
    handler = asgi_websocket_handler(gateway.handle, host)
    with scope:
        async with trio.open_nursery() as inner:
            listening = await inner.start(net.serve_websocket, handler, host, port)
            task_status.started(listening.port)


async def serve_sandbox_cli(
    host: str,
    port: int,
    scenario: str,
    *,
    out: TextIO | None = None,
    tls: bool = False,
    dave_protocol_version: int = 1,
) -> None:
    """``clank sandbox``: print one JSON line of :meth:`Sandbox.info` when ready, run until
    cancelled or until SIGINT / SIGTERM (received explicitly: a KeyboardInterrupt would have to
    find the main task between checkpoints, and the servers' cleanup must run either way)."""
    stream = out if out is not None else sys.stdout
    # The receiver opens before the line is printed: a supervisor that signals as soon as it has
    # read the line must find it installed (else Python's default SIGINT handler exits 1).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_sandbox(
            host=host, port=port, scenario=scenario, tls=tls, dave_protocol_version=dave_protocol_version
        ) as sandbox:
            stream.write(json.dumps(sandbox.info()) + "\n")
            stream.flush()
            async for signum in signals:
                log.info("sandbox stopping", signal=signal.Signals(signum).name)
                return
