"""Voice closes 4001/4002/4003/4005/4020 rejoin through op4 for a fresh token and server (issue 15, item 11).

The whole session on the fake network under ``autojump_clock``: our gateway client and voice
session against the strict sandbox (main gateway, voice server, real davey). Before the fix the
voice leg re-identified on the same endpoint with the credentials the server had just refused
(``rejoins == 0``, a fresh identify counted in the leg's ``reconnects``); now the voice role ends
and the session sends op4 (leave, join) and connects with the new VOICE_SERVER_UPDATE.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from fake_session import fake_session, media, wait_until

from clank.session.roles import RoleState

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


@pytest.mark.parametrize("code", [4001, 4002, 4003, 4005, 4020])
async def test_a_refused_request_close_rejoins_through_op4(
    code: int, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):  # virtual time
        async with fake_session() as (_net, sb, session):
            first = session.voice
            joins = session.statistics().joins
            media(sb).faults.close(sb.our_user_id, code)
            await wait_until(lambda: session.voice is not first)
            await session.voice.wait_ready()
            stats = session.statistics()
            assert stats.rejoins == 1 and stats.joins == joins + 1  # op4 null, then op4 with the channel
            assert first.state is RoleState.FAILED and first.close_code == code
            connection = first.api.statistics().connection
            assert connection is not None and connection.reconnects == 0  # no identify with the old token
            assert session.voice.state is RoleState.READY
