"""A speaker whose op5 never arrives is heard with the right user id (strict sandbox, fake network).

Discord does not promise an op5 before (or with) a user's audio; the sandbox's ``omit_speaking``
fault never sends one. Our voice role holds the unannounced SSRC's audio and trial-decrypts it
with the DAVE keys of the members it knows (alice from op11), which binds the SSRC to alice.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing
from fake_session import fake_session, media, user_id

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def wait_until(predicate: Callable[[], bool], step: float = 0.01) -> None:
    """Poll (the DAVE core exposes state, not events); callers bound it with fail_after."""
    while True:
        if predicate():
            return
        await trio.sleep(step)


async def test_a_speaker_without_op5_is_heard_with_the_right_user_id_within_1_5_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(300):  # virtual
        async with fake_session() as (_net, sb, session):
            alice = user_id(sb, "alice")
            api = session.voice.api
            with api.subscribe_audio(None, buffer=500) as audio:
                await sb.world.join_voice(alice, sb.voice_channel_id)
                media(sb).faults.omit_speaking(alice)
                # Alice is in our DAVE group (her key is known to us) before she talks.
                await wait_until(lambda: int(alice) in api.connection.dave.group_user_ids())
                started = trio.current_time()
                await sb.world.set_speaking(alice, True)
                first = await audio.receive()
                heard_after = trio.current_time() - started
            assert first.user_id == alice
            assert heard_after < 1.5, heard_after
            assert api.connection.ssrc_map().get(first.ssrc) is None  # no op5 ever named it
            early = api.statistics().audio_receive.early
            assert early.bound_by_trial == 1
            assert alice in api.speaking_users()
