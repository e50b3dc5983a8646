"""Recovery over the full path (raw client from our own cores, real websocket + UDP, real davey):
a 4015 close resumed with op7 -> op9 keeping SSRC, key and DAVE state; a corrupted DAVE Welcome
recovered with op31 -> removal -> re-add, without disturbing anyone else in the call."""

from __future__ import annotations

import trio
import trio.testing
from rtc_helpers import RawVoiceClient, open_raw_client, voice_config, wait_until

from clank.crypto.dave import OP_INVALID_COMMIT_WELCOME, OP_KEY_PACKAGE
from clank.io.fakenet import open_fake_net
from clank.protocol import voice_gateway as client
from clank.sandbox.rtc.server import (
    CLOSE_VOICE_SERVER_CRASHED,
    MediaServer,
    MediaServerConfig,
    open_media_server,
)
from clank.sandbox.rtc.users import SimulatedMember, open_simulated_member

GUILD = "111"
CHANNEL = 222000000000000001
ME = "333"
SESSION = "f00dfeed"
ALICE, BOB = 1001, 1002


def _config(server: MediaServer) -> client.VoiceGatewayConfig:
    return voice_config(server, ME, SESSION, server_id=GUILD, channel_id=str(CHANNEL))


def _sent(raw: RawVoiceClient, op: int) -> int:
    return sum(isinstance(e, client.SendText | client.SendBinary) and e.op == op for e in raw.events)


def _ok(raw: RawVoiceClient, user_id: int) -> int:
    return raw.dave.statistics().decrypt_counters(user_id, "audio").ok


def _settled(server: MediaServer, users: set[int]) -> bool:
    stats = server.statistics().dave
    return stats.open_transitions == 0 and set(stats.roster) == users


async def _hears_everyone(raw: RawVoiceClient, users: tuple[int, ...], more: int = 10) -> None:
    """Every user's audio keeps decrypting (``more`` new frames each), with no new failure."""
    failures = sum(raw.dave.statistics().decrypt_failures.values())
    targets = {u: _ok(raw, u) + more for u in users}
    await wait_until(lambda: all(_ok(raw, u) >= n for u, n in targets.items()))
    assert sum(raw.dave.statistics().decrypt_failures.values()) == failures


async def test_resume_after_4015_keeps_ssrc_key_and_dave_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(15):
        async with (
            open_fake_net() as net,
            open_media_server("voice", GUILD, CHANNEL, MediaServerConfig(net=net)) as server,
        ):
            async with (
                open_simulated_member(server, ALICE, signal="tone", frequency=300.0, talking=True),
                open_raw_client(_config(server), server.endpoint, CHANNEL, run=False, net=net) as raw,
                trio.open_nursery() as nursery,
            ):
                ended: list[client.Closed | client.Failed] = []

                async def connect() -> None:
                    ended.append(await raw.connect())

                nursery.start_soon(connect)
                await wait_until(lambda: raw.dave.ready and _settled(server, {ALICE, int(ME)}))
                await _hears_everyone(raw, (ALICE,))
                session = raw.session
                assert session is not None
                epoch = raw.dave.epoch

                server.close_connection(int(ME), CLOSE_VOICE_SERVER_CRASHED)
                await wait_until(lambda: bool(ended))
                assert isinstance(ended[0], client.Closed) and ended[0].code == CLOSE_VOICE_SERVER_CRASHED
                assert ended[0].action is client.CloseAction.RESUME
                # Still in the group and the call while the websocket is down.
                assert raw.dave.ready and raw.dave.epoch == epoch
                assert server.participant(int(ME)) is not None

                # Bob joins while we are away: op11/op5 and his DAVE proposals wait in the
                # server's replay buffer and reach us after op9.
                async with open_simulated_member(
                    server, BOB, signal="tone", frequency=500.0, talking=True
                ) as (
                    bob,
                    _,
                ):
                    nursery.start_soon(connect)
                    await wait_until(lambda: raw.resumes() == 1)
                    await wait_until(lambda: _settled(server, {ALICE, BOB, int(ME)}) and raw.dave.ready)
                    await _hears_everyone(raw, (ALICE, BOB))
                    # Same session: no second identify/op4, same SSRC and key, no DAVE re-init.
                    assert sum(isinstance(e, client.SessionEstablished) for e in raw.events) == 1
                    assert raw.session is session and raw.core.session == session
                    assert raw.core.ready is not None and raw.core.ready.ssrc == session.ssrc
                    participant = server.participant(int(ME))
                    assert participant is not None and participant.audio_ssrc == session.ssrc
                    assert _sent(raw, OP_KEY_PACKAGE) == 1
                    assert raw.dave.statistics().recoveries == 0
                    assert raw.dave.epoch is not None and epoch is not None and raw.dave.epoch > epoch
                    assert bob.dave_session.ready
                    # op11 for bob was sent while we were away: the server replayed it after op9.
                    resumed_at = next(i for i, e in enumerate(raw.events) if isinstance(e, client.Resumed))
                    joined = client.ClientsConnected((str(BOB),))
                    assert joined in raw.events[resumed_at:]
                nursery.cancel_scope.cancel()


async def _run_member(
    server: MediaServer,
    user: int,
    frequency: float,
    task_status: trio.TaskStatus[SimulatedMember] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with open_simulated_member(server, user, signal="tone", frequency=frequency, talking=True) as (
        m,
        _,
    ):
        task_status.started(m)
        await trio.sleep_forever()


async def test_corrupted_welcome_recovers_with_op31_without_disturbing_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(15):
        async with (
            open_fake_net() as net,
            open_media_server("voice", GUILD, CHANNEL, MediaServerConfig(net=net)) as server,
            trio.open_nursery() as members,
        ):
            alice = await members.start(_run_member, server, ALICE, 300.0)
            bob = await members.start(_run_member, server, BOB, 500.0)
            await wait_until(lambda: alice.dave_session.ready and bob.dave_session.ready)
            epoch_before = server.statistics().dave.epoch

            server.corrupt_next_welcome(int(ME))
            async with open_raw_client(_config(server), server.endpoint, CHANNEL, net=net) as raw:
                # The Welcome fails: op31 and a fresh key package; the group removes and re-adds us.
                await wait_until(lambda: _sent(raw, OP_INVALID_COMMIT_WELCOME) == 1)
                await wait_until(lambda: raw.dave.ready and _settled(server, {ALICE, BOB, int(ME)}))
                stats = server.statistics()
                assert stats.dave.invalid_commit_reports == 1
                assert raw.dave.statistics().recoveries == 1
                assert _sent(raw, OP_KEY_PACKAGE) == 2
                assert stats.dave.epoch >= epoch_before + 2  # add (failed welcome), then remove + add
                await _hears_everyone(raw, (ALICE, BOB))
                # Nobody was disconnected, our websocket included, and the others still hear each other.
                assert raw.ends == [] and stats.connections == 1
                assert alice.joined and bob.joined
                failures = sum(alice.dave_session.statistics().decrypt_failures.values())
                heard = alice.audio_packets[BOB]
                await wait_until(lambda: alice.audio_packets[BOB] >= heard + 10)
                assert sum(alice.dave_session.statistics().decrypt_failures.values()) == failures
                assert alice.dave_session.epoch == bob.dave_session.epoch == stats.dave.epoch
            members.cancel_scope.cancel()
