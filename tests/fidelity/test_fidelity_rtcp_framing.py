"""The strict SFU accepts only the 8-byte-AAD RTCP framing Discord decrypts; others are counted drops.

In-process (simulated members, no sockets): bob sends alice a PLI sealed with the 4-byte AAD the
replaced system used (header only; the sender SSRC encrypted) and then with the 8-byte AAD
(header + sender SSRC in the clear). Only the second reaches alice.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from clank.io.fakenet import open_fake_net
from clank.sandbox.rtc.server import MediaServerConfig, open_media_server
from clank.sandbox.rtc.users import open_simulated_member
from clank.wire import rtcp

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
ALICE, BOB = 1001, 1002


async def wait_until(predicate: Callable[[], bool], step: float = 0.01) -> None:
    while True:
        if predicate():
            return
        await trio.sleep(step)


async def test_only_the_8_byte_rtcp_framing_is_accepted(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with (
            open_fake_net() as net,
            open_media_server("voice", "111", 222, MediaServerConfig(net=net)) as server,
            open_simulated_member(server, ALICE) as (alice, _a),
            open_simulated_member(server, BOB) as (bob, _b),
        ):
            await wait_until(lambda: alice.joined and bob.joined)
            seen: list[rtcp.RtcpPacket] = []
            alice.feedback_handler = seen.append
            pli = rtcp.PictureLossIndication(bob.participant.audio_ssrc, alice.participant.streams[0].ssrc)
            plain = pli.serialize()
            server.receive_from(bob.participant, bob.cipher.seal(plain[:4], plain[4:]))  # AAD 4
            await trio.sleep(0.1)
            stats = server.statistics().sfu
            assert stats.dropped.get("rtcp_undecodable") == 1 and stats.keyframe_requests_forwarded == 0
            assert seen == []
            bob.send_rtcp(pli)  # AAD 8
            await wait_until(lambda: bool(seen))
            assert server.statistics().sfu.keyframe_requests_forwarded == 1
            assert isinstance(seen[0], rtcp.PictureLossIndication)
