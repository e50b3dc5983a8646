"""Sandbox main gateway over real loopback websockets, driven by a minimal raw client."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from clank.sandbox.app import open_sandbox
from clank.sandbox.gateway import CLOSE_CODES, OP_RULES
from clank.sandbox.hub import REPLAY_BUFFER_SIZE
from clank.sandbox.model import guild_stream_key


def _names(frames: list[dict[str, Any]]) -> list[str]:
    return [f["t"] for f in frames if f["op"] == 0]


async def test_identify_ready_guild_create(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            frames = await gw.identify(sb.token)
            assert _names(frames) == ["READY"]  # a user session: guilds inline, no GUILD_CREATE
            ready = frames[0]["d"]
            (guild,) = ready["guilds"]
            assert frames[0]["s"] == 1
            assert ready["user"]["id"] == sb.our_user_id
            assert len(ready["session_id"]) == 32
            assert ready["resume_gateway_url"] == sb.gateway_url
            assert "application" not in ready  # user accounts have none
            assert sb.world.user_by_name("alice").id in {u["id"] for u in ready["users"]}
            assert guild["id"] == sb.guild_id
            assert {c["id"]: c["type"] for c in guild["channels"]}[sb.voice_channel_id] == 2
            assert sb.our_user_id in {m["user"]["id"] for m in guild["members"]}
            assert guild["voice_states"] == []


async def test_bot_ready_has_application(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url, version=10) as gw:
            frames = await gw.identify(sb.bot_token)
            ready = frames[0]["d"]
            assert ready["v"] == 10
            assert ready["user"]["bot"] is True
            assert ready["application"] == {"id": ready["user"]["id"], "flags": 0}


async def test_streamer_scenario_seeds_voice_states_and_supplemental(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with (
            open_sandbox(media=False, scenario="streamer") as sb,
            gateway_connect(sb.gateway_url) as gw,
        ):
            frames = await gw.identify(sb.token, capabilities=(1 << 4) | (1 << 5))
            assert _names(frames) == ["READY", "READY_SUPPLEMENTAL"]
            alice = sb.world.user_by_name("alice").id
            supplemental = frames[1]["d"]["guilds"][0]
            assert supplemental["id"] == sb.guild_id
            for states in (supplemental["voice_states"], frames[0]["d"]["guilds"][0]["voice_states"]):
                (state,) = states
                assert state["user_id"] == alice
                assert state["channel_id"] == sb.voice_channel_id
                assert state["self_stream"] is True


async def test_heartbeat_is_acked_before_and_after_identify(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            hello = await gw.hello()
            assert hello == {"heartbeat_interval": 41250}
            await gw.send(1, None)
            assert (await gw.recv())["op"] == 11
            await gw.send(2, {"token": sb.token})
            await gw.recv_until(lambda f: f.get("t") == "READY")
            await gw.send(1, gw.seq)
            assert (await gw.recv())["op"] == 11


async def test_resume_replays_missed_dispatches(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb:
            async with gateway_connect(sb.gateway_url) as gw:
                frames = await gw.identify(sb.token)
                session_id, seq = frames[0]["d"]["session_id"], gw.seq
                await gw.ws.aclose(code=4000)  # not 1000: the session stays resumable
            alice = sb.world.user_by_name("alice").id
            await sb.world.join_voice(alice, sb.voice_channel_id)
            await sb.world.go_live(alice)
            async with gateway_connect(sb.gateway_url) as gw:
                await gw.hello()
                await gw.send(6, {"token": sb.token, "session_id": session_id, "seq": seq})
                frames = await gw.recv_until(lambda f: f.get("t") == "RESUMED")
                assert _names(frames) == ["VOICE_STATE_UPDATE", "VOICE_STATE_UPDATE", "RESUMED"]
                assert [f["s"] for f in frames] == [seq + 1, seq + 2, seq + 3]
                assert frames[1]["d"]["self_stream"] is True
                # The resumed session is live again: new events arrive.
                await sb.world.stop_stream(alice)
                update = await gw.recv_dispatch("VOICE_STATE_UPDATE")
                assert update["self_stream"] is False


@pytest.mark.parametrize("case", ["unknown_session", "future_seq", "wrong_token_user"])
async def test_resume_refused_with_op9_false(gateway_connect: Any, case: str) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb:
            async with gateway_connect(sb.gateway_url) as gw:
                frames = await gw.identify(sb.token)
                session_id = frames[0]["d"]["session_id"]
                await gw.ws.aclose(code=4000)
            token, seq = sb.token, gw.seq
            if case == "unknown_session":
                session_id = "0" * 32
            elif case == "future_seq":
                seq = 1000
            else:
                token = sb.bot_token  # a valid token, but someone else's session
            async with gateway_connect(sb.gateway_url) as gw:
                await gw.hello()
                await gw.send(6, {"token": token, "session_id": session_id, "seq": seq})
                assert await gw.recv() == {"op": 9, "d": False, "s": None, "t": None}


async def test_voice_join_and_leave(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with (
            open_sandbox(media=False) as sb,
            gateway_connect(sb.gateway_url) as ours,
            gateway_connect(sb.gateway_url) as bot,
        ):
            await ours.identify(sb.token)
            await bot.identify(sb.bot_token)
            join = {
                "guild_id": sb.guild_id,
                "channel_id": sb.voice_channel_id,
                "self_mute": False,
                "self_deaf": True,
            }
            await ours.send(4, join)
            frames = [await ours.recv(), await ours.recv()]
            by_name = {f["t"]: f["d"] for f in frames}
            state, server = by_name["VOICE_STATE_UPDATE"], by_name["VOICE_SERVER_UPDATE"]
            assert state["user_id"] == sb.our_user_id
            assert state["channel_id"] == sb.voice_channel_id
            assert state["self_deaf"] is True
            assert len(state["session_id"]) == 32
            assert server["guild_id"] == sb.guild_id
            assert server["endpoint"].startswith("127.0.0.1:")
            assert server["token"]
            # The other session sees the voice state but not our voice server.
            seen = await bot.recv()
            assert seen["t"] == "VOICE_STATE_UPDATE"
            assert seen["d"]["user_id"] == sb.our_user_id
            await ours.send(4, {"guild_id": sb.guild_id, "channel_id": None})
            left = await ours.recv_dispatch("VOICE_STATE_UPDATE")
            assert left["channel_id"] is None
            assert (await bot.recv())["d"]["channel_id"] is None
            assert sb.world.voice_state(sb.our_user_id) is None
            # A second join is a new voice session.
            await ours.send(4, join)
            again = await ours.recv_dispatch("VOICE_STATE_UPDATE")
            assert again["session_id"] != state["session_id"]


async def _join(gw: Any, guild_id: str, channel_id: str) -> dict[str, Any]:
    await gw.send(4, {"guild_id": guild_id, "channel_id": channel_id})
    frames = await gw.recv_until(lambda f: f.get("t") == "VOICE_SERVER_UPDATE")
    return next(f["d"] for f in frames if f.get("t") == "VOICE_STATE_UPDATE")


async def test_watch_live_stream(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with (
            open_sandbox(media=False, scenario="streamer") as sb,
            gateway_connect(sb.gateway_url) as gw,
        ):
            await gw.identify(sb.token)
            await _join(gw, sb.guild_id, sb.voice_channel_id)
            alice = sb.world.user_by_name("alice").id
            key = guild_stream_key(sb.guild_id, sb.voice_channel_id, alice)
            await gw.send(20, {"stream_key": key})
            create = await gw.recv()
            server = await gw.recv()
            assert create["t"] == "STREAM_CREATE"
            assert create["d"]["stream_key"] == key
            assert create["d"]["viewer_ids"] == [sb.our_user_id]
            assert int(create["d"]["rtc_channel_id"]) == int(create["d"]["rtc_server_id"]) + 1
            assert create["d"]["paused"] is False
            assert server["t"] == "STREAM_SERVER_UPDATE"
            assert server["d"]["stream_key"] == key
            assert server["d"]["guild_id"] is None
            assert server["d"]["token"]
            # The streamer stops: the viewer is told.
            await sb.world.stop_stream(alice)
            frames = await gw.recv_until(lambda f: f.get("t") == "STREAM_DELETE")
            assert frames[-1]["d"] == {"stream_key": key, "reason": "stream_ended", "unavailable": False}


@pytest.mark.parametrize(
    ("scenario", "join", "key_kind", "reason"),
    [
        ("empty", True, "valid", "stream_ended"),  # nobody streams
        ("streamer", False, "valid", "unauthorized"),  # not in the channel
        ("streamer", True, "garbage", "parse_failed"),
    ],
)
async def test_watch_refused_with_stream_delete(
    gateway_connect: Any, scenario: str, join: bool, key_kind: str, reason: str
) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False, scenario=scenario) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.identify(sb.token)
            if join:
                await _join(gw, sb.guild_id, sb.voice_channel_id)
            alice = sb.world.user_by_name("alice").id
            key = (
                guild_stream_key(sb.guild_id, sb.voice_channel_id, alice) if key_kind == "valid" else "nope:1"
            )
            await gw.send(20, {"stream_key": key})
            frame = await gw.recv()
            assert frame["t"] == "STREAM_DELETE"
            assert frame["d"] == {"stream_key": key, "reason": reason, "unavailable": False}


async def test_own_stream_create_pause_delete(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.identify(sb.token)
            await _join(gw, sb.guild_id, sb.voice_channel_id)
            key = guild_stream_key(sb.guild_id, sb.voice_channel_id, sb.our_user_id)
            await gw.send(18, {"type": "guild", "guild_id": sb.guild_id, "channel_id": sb.voice_channel_id})
            frames = [await gw.recv() for _ in range(3)]
            assert _names(frames) == ["STREAM_CREATE", "STREAM_SERVER_UPDATE", "VOICE_STATE_UPDATE"]
            assert frames[0]["d"]["stream_key"] == key
            assert frames[0]["d"]["viewer_ids"] == []
            assert frames[2]["d"]["self_stream"] is True
            await gw.send(22, {"stream_key": key, "paused": True})
            update = await gw.recv()
            assert update["t"] == "STREAM_UPDATE"
            assert update["d"]["paused"] is True
            await gw.send(19, {"stream_key": key})
            frames = [await gw.recv() for _ in range(2)]
            assert frames[0]["t"] == "STREAM_DELETE"
            assert frames[0]["d"]["reason"] == "user_requested"
            assert frames[1]["t"] == "VOICE_STATE_UPDATE"
            assert frames[1]["d"]["self_stream"] is False
            assert sb.world.streams == {}


async def test_stream_create_outside_voice_is_refused(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.identify(sb.token)
            await gw.send(18, {"type": "guild", "guild_id": sb.guild_id, "channel_id": sb.voice_channel_id})
            frame = await gw.recv()
            assert frame["t"] == "STREAM_DELETE"
            assert frame["d"]["reason"] == "unauthorized"


async def test_viewer_stops_watching_with_op19(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with (
            open_sandbox(media=False, scenario="streamer") as sb,
            gateway_connect(sb.gateway_url) as gw,
        ):
            await gw.identify(sb.token)
            await _join(gw, sb.guild_id, sb.voice_channel_id)
            key = guild_stream_key(sb.guild_id, sb.voice_channel_id, sb.world.user_by_name("alice").id)
            await gw.send(20, {"stream_key": key})
            await gw.recv_dispatch("STREAM_SERVER_UPDATE")
            await gw.send(19, {"stream_key": key})
            assert (await gw.recv_dispatch("STREAM_DELETE"))["reason"] == "user_requested"
            stream = sb.world.stream(key)
            assert stream is not None
            assert stream.viewer_ids == []


async def test_message_create_is_dispatched(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.identify(sb.bot_token)
            await sb.world.post_message(sb.text_channel_id, sb.our_user_id, "hello bot")
            message = await gw.recv_dispatch("MESSAGE_CREATE")
            assert message["content"] == "hello bot"
            assert message["author"]["id"] == sb.our_user_id


async def test_request_guild_members_answers_one_chunk(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.identify(sb.bot_token)
            await gw.send(8, {"guild_id": sb.guild_id, "query": "", "limit": 0, "nonce": "n1"})
            chunk = await gw.recv_dispatch("GUILD_MEMBERS_CHUNK")
            assert chunk["nonce"] == "n1"
            assert len(chunk["members"]) == len(sb.world.users)


async def test_zlib_stream_compression(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url, compress=True) as gw:
            frames = await gw.identify(sb.token)
            assert _names(frames) == ["READY"]
            assert gw.binary_frames == 2  # hello, READY (guilds inline): every frame is compressed


# --- close-code policy ------------------------------------------------------------------------
async def _send_raw(gw: Any, text: str) -> None:
    await gw.ws.send_message(text)


CLOSE_CASES: dict[str, tuple[int, Any]] = {
    # name: (expected close code, what to send after hello)
    "bad_token": (4004, {"op": 2, "d": {"token": "nope"}}),
    "bot_prefix_in_identify": (4004, {"op": 2, "d": {"token": "Bot {bot_token}"}}),
    "op4_before_identify": (4003, {"op": 4, "d": {"guild_id": "1", "channel_id": None}}),
    "op20_before_identify": (4003, {"op": 20, "d": {"stream_key": "guild:1:2:3"}}),
    "unknown_op": (4001, {"op": 99, "d": None}),
    "server_only_op": (4001, {"op": 11, "d": None}),
    "invalid_json": (4002, "{not json"),
    "identify_not_object": (4002, {"op": 2, "d": "token"}),
}


@pytest.mark.parametrize("case", sorted(CLOSE_CASES))
async def test_close_codes(gateway_connect: Any, case: str) -> None:
    expected, payload = CLOSE_CASES[case]
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.hello()
            text = payload if isinstance(payload, str) else json.dumps(payload)
            await _send_raw(gw, text.replace("{bot_token}", sb.bot_token))
            assert await gw.expect_close() == expected


async def test_identify_twice_is_4005(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.identify(sb.token)
            await gw.send(2, {"token": sb.token})
            assert await gw.expect_close() == 4005


async def test_unsupported_version_is_4012(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url, version=6) as gw:
            assert await gw.expect_close() == 4012


async def test_heartbeat_timeout_closes_4009(
    gateway_connect: Any, autojump_clock: trio.testing.MockClock
) -> None:
    autojump_clock.autojump_threshold = 0.05  # real sockets: only jump when really idle
    with trio.fail_after(300):
        async with (
            open_sandbox(media=False, heartbeat_interval_ms=1000) as sb,
            gateway_connect(sb.gateway_url) as gw,
        ):
            await gw.identify(sb.token)
            start = trio.current_time()
            # Heartbeats keep it alive past several intervals...
            for _ in range(4):
                await trio.sleep(0.9)
                await gw.send(1, gw.seq)
                assert (await gw.recv())["op"] == 11
            # ...then silence: closed after 1.5 intervals.
            assert await gw.expect_close() == 4009
            assert trio.current_time() - start >= 3.6 + 1.5 - 0.01
            assert sb.world.hub.statistics().sessions == 0  # 4009: a new session is needed


def test_close_code_table_is_consistent() -> None:
    codes = [c.code for c in CLOSE_CODES.values()]
    assert len(codes) == len(set(codes))
    assert CLOSE_CODES["authentication_failed"].code == 4004
    assert not CLOSE_CODES["authentication_failed"].keeps_session
    for op, rule in OP_RULES.items():
        assert op not in (0, 7, 9, 10, 11), "server-to-client ops must not be accepted"
        assert rule.needs_session or op in (1, 2, 6)


async def test_client_too_far_behind_is_disconnected_without_blocking_the_world(gateway_connect: Any) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, gateway_connect(sb.gateway_url) as gw:
            await gw.identify(sb.token)
            # The world never waits for a client: thousands of events are queued without a checkpoint.
            for n in range(REPLAY_BUFFER_SIZE + 100):
                sb.world.hub.dispatch("TEST_EVENT", {"n": n}, users=[sb.our_user_id])
            assert await gw.expect_close() == 4000
            assert sb.world.hub.statistics().sessions == 0
