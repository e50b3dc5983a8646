"""Each sandbox fault control is observable on the wire."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from clank.errors import SandboxError
from clank.sandbox.app import open_sandbox


async def test_close_client_keeps_session_resumable(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb:
            async with gateway_connect(sb.gateway_url) as gw:
                frames = await gw.identify(sb.token)
                session_id = frames[0]["d"]["session_id"]
                sb.faults.close_client(sb.our_user_id, 4000)
                assert await gw.expect_close() == 4000
            async with gateway_connect(sb.gateway_url) as gw2:
                await gw2.hello()
                await gw2.send(6, {"token": sb.token, "session_id": session_id, "seq": gw.seq})
                assert (await gw2.recv())["t"] == "RESUMED"


@pytest.mark.parametrize("resumable", [True, False])
async def test_invalidate_session(gateway_connect: Any, resumable: bool) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.identify(sb.token)
            sb.faults.invalidate_session(sb.our_user_id, resumable)
            assert await gw.recv() == {"op": 9, "d": resumable, "s": None, "t": None}
            if resumable:
                await gw.send(1, gw.seq)  # still attached
                assert (await gw.recv())["op"] == 11
            else:
                # The session is gone: ops that need one are refused until a new identify.
                await gw.send(4, {"guild_id": sb.guild_id, "channel_id": None})
                assert await gw.expect_close() == 4003


async def test_stop_acking(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.identify(sb.token)
            sb.faults.stop_acking(sb.our_user_id)
            await gw.send(1, gw.seq)
            with trio.move_on_after(0.3) as waited:
                await gw.recv()
            assert waited.cancelled_caught, "no ACK expected while acking is stopped"
            sb.faults.stop_acking(sb.our_user_id, on=False)
            await gw.send(1, gw.seq)
            assert (await gw.recv())["op"] == 11


async def test_send_reconnect_and_request_heartbeat(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.identify(sb.token)
            sb.faults.request_heartbeat(sb.our_user_id)
            assert (await gw.recv())["op"] == 1
            sb.faults.send_reconnect(sb.our_user_id)
            assert (await gw.recv())["op"] == 7


async def test_drop_dispatch(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.identify(sb.token)
            sb.faults.drop_dispatch("VOICE_SERVER_UPDATE", count=1)
            await gw.send(4, {"guild_id": sb.guild_id, "channel_id": sb.voice_channel_id})
            assert (await gw.recv())["t"] == "VOICE_STATE_UPDATE"
            # The dropped event never comes; the next world event is the next frame.
            alice = sb.world.user_by_name("alice").id
            await sb.world.join_voice(alice, sb.voice_channel_id)
            frame = await gw.recv()
            assert frame["t"] == "VOICE_STATE_UPDATE"
            assert frame["d"]["user_id"] == alice
            # Only one was dropped.
            await gw.send(
                4, {"guild_id": sb.guild_id, "channel_id": sb.world.voice_channel_ids(sb.guild_id)[1]}
            )
            frames = await gw.recv_until(lambda f: f.get("t") == "VOICE_SERVER_UPDATE")
            assert frames[-1]["d"]["guild_id"] == sb.guild_id


async def test_delay_dispatch(gateway_connect: Any, autojump_clock: trio.testing.MockClock) -> None:
    autojump_clock.autojump_threshold = 0.05
    with trio.fail_after(120):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.identify(sb.token)
            sb.faults.delay_dispatch("VOICE_SERVER_UPDATE", 5.0)
            start = trio.current_time()
            await gw.send(4, {"guild_id": sb.guild_id, "channel_id": sb.voice_channel_id})
            assert (await gw.recv())["t"] == "VOICE_STATE_UPDATE"
            # Control frames are not held back by a delayed dispatch.
            await gw.send(1, gw.seq)
            assert (await gw.recv())["op"] == 11
            assert trio.current_time() - start < 1.0
            frame = await gw.recv()
            assert frame["t"] == "VOICE_SERVER_UPDATE"
            assert trio.current_time() - start >= 5.0


async def test_faults_on_unconnected_user_raise() -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb:
            with pytest.raises(SandboxError):
                sb.faults.send_reconnect(sb.our_user_id)
            with pytest.raises(SandboxError):
                sb.faults.close_client(sb.our_user_id, 4000)
