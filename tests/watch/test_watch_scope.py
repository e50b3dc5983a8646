"""A watch's own tasks (its screen notes) live in the watch's scope, on the fake network.

``WatchHandle.start_soon`` runs a task in the session's ``Watches`` under a scope of that watch:
ending the watch (stop, STREAM_DELETE) cancels its tasks and nothing else; other watches' notes
go on taking notes; closing the session ends the rest.
"""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing
from fake_session import fake_session, go_live, wait_until

from clank.config import WatchSettings
from clank.errors import UsageError
from clank.session.stream_watch import start_stream_watch
from clank.session.watch_handle import WatchHandle
from clank.watch.notes import NotePolicy, ScreenNotes
from clank.watch.vision import OfflineVisionProvider

WATCH = WatchSettings(max_fps=5.0, preferred_pixel_count=160 * 120, credentials_timeout_s=5.0)
POLICY = NotePolicy(min_interval_s=1.0, periodic_s=2.0, change_floor=0.0)
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


def with_notes(handle: WatchHandle) -> tuple[ScreenNotes, list[str]]:
    """Screen notes for ``handle`` plus a task that only ends by cancellation, both in its scope."""
    notes = ScreenNotes(OfflineVisionProvider(ocr=False), policy=POLICY, user_id=handle.target_user_id)
    ended: list[str] = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.append(handle.target_user_id)

    handle.start_soon(partial(notes.run, handle.frames))
    handle.start_soon(forever)
    return notes, ended


async def test_ending_a_watch_ends_its_tasks_and_only_those(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(3600):  # virtual
        async with fake_session() as (_net, sb, session):
            alice = await go_live(sb, "alice")
            bob = await go_live(sb, "bob")
            carol = await go_live(sb, "carol")
            watch_alice = await start_stream_watch(session, alice, settings=WATCH)
            watch_bob = await start_stream_watch(session, bob, settings=WATCH)
            watch_carol = await start_stream_watch(session, carol, settings=WATCH)
            notes_alice, ended_alice = with_notes(watch_alice)
            notes_bob, ended_bob = with_notes(watch_bob)
            notes_carol, ended_carol = with_notes(watch_carol)
            watches = session.watches
            await wait_until(lambda: min(n.statistics().taken for n in (notes_alice, notes_bob)) >= 1)
            assert [watches.running_tasks(h) for h in (watch_alice, watch_bob, watch_carol)] == [2, 2, 2]

            # Stopping alice's watch cancels both of its tasks (one never ends by itself).
            await watch_alice.stop()
            await wait_until(lambda: watches.running_tasks(watch_alice) == 0)
            assert ended_alice == [alice] and notes_alice.statistics().closed
            with pytest.raises(UsageError):
                watch_alice.start_soon(trio.sleep_forever)  # an ended watch takes no new tasks

            # STREAM_DELETE ends carol's watch, and with it carol's tasks.
            await sb.world.stop_stream(carol)
            await watch_carol.wait_stopped()
            await wait_until(lambda: watches.running_tasks(watch_carol) == 0)
            assert ended_carol == [carol] and notes_carol.statistics().closed

            # Bob's notes go on.
            taken = notes_bob.statistics().taken
            await wait_until(lambda: notes_bob.statistics().taken > taken)
            assert watches.running_tasks(watch_bob) == 2 and not ended_bob
            assert not notes_bob.statistics().closed
        # The session ended: bob's tasks with it.
        assert ended_bob == [bob] and notes_bob.statistics().closed
