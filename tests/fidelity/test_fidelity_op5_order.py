"""Media before op5 (strict sandbox ``speaking_delay``): the speaker is heard, with the right user id.

Fake network + autojump clock. Discord promises no order between a speaker's first packets and
the op5 naming its SSRC; the strict sandbox sends op5 to real clients ``speaking_delay`` seconds
after the speaker starts (0.2 s by default; 0.8 s here so the gap is plain). A client that
dropped audio from an unannounced SSRC (before the early-audio hold) would hear nothing until
the op5, and nothing at all of what came before it. The op5-never-arrives case (the
``omit_speaking`` switch) is tests/fidelity/test_fidelity_early_audio.py.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
import trio
import trio.testing
from fakenet_kit import fake_session

from clank.sandbox.fidelity import STRICT

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")

LATE_OP5 = attrs.evolve(STRICT, speaking_delay=0.8)


async def wait_until(predicate: Callable[[], bool], step: float = 0.01) -> None:
    while True:
        if predicate():
            return
        await trio.sleep(step)


@pytest.mark.parametrize("dave", [1, 0], ids=["dave", "no-dave"])
async def test_audio_before_its_op5_is_heard_with_the_right_user_id(
    autojump_clock: trio.testing.MockClock, dave: int
) -> None:
    with trio.fail_after(600):
        async with fake_session(LATE_OP5, dave_protocol_version=dave) as (_net, sb, session):
            alice = sb.world.user_by_name("alice").id
            api = session.voice.api
            with api.subscribe_audio(None, buffer=500) as audio:
                await sb.world.join_voice(alice, sb.voice_channel_id)
                if dave:
                    await wait_until(lambda: int(alice) in api.connection.dave.group_user_ids())
                else:
                    await trio.sleep(0.5)
                started = trio.current_time()
                await sb.world.set_speaking(alice, True)
                first = await audio.receive()
                heard_after = trio.current_time() - started
                await wait_until(lambda: first.ssrc in api.connection.ssrc_map())  # the late op5
                op5_after = trio.current_time() - started
            assert first.user_id == alice
            assert heard_after < 1.5, heard_after
            assert op5_after >= LATE_OP5.speaking_delay  # the audio really came first
            early = api.statistics().audio_receive.early
            assert early.held >= 1
            if dave:  # DAVE keys told alice's packets apart before the op5 came
                assert heard_after < LATE_OP5.speaking_delay and early.bound_by_trial == 1
            else:  # held until the op5 bound the SSRC, then delivered
                assert early.delivered >= 1
