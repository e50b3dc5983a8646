"""The registry's one flow per stream key: requests, the fresh-credentials rule, op19 after a delete.

Both Go Live legs use it (clank.session.stream_leg): a watch requests with op20
(``request_watch``), our own Go Live with op18 (``request_go_live``); either takes credentials
only when a STREAM_SERVER_UPDATE answered that request (``fresh_credentials``), and no op19
follows a STREAM_DELETE.
"""

from __future__ import annotations

import pytest

from clank.protocol.streams import StreamRegistry
from clank.wire.gateway import Op
from clank.wire.gateway_events import StreamKey

ME, ALICE, GUILD, CHANNEL = "333", "444", "111", "222"
KEY_ME = f"guild:{GUILD}:{CHANNEL}:{ME}"
KEY_ALICE = f"guild:{GUILD}:{CHANNEL}:{ALICE}"


def registry() -> StreamRegistry:
    return StreamRegistry(ME, guild_ids=[GUILD])


def stream_create(key: str) -> dict[str, object]:
    return {
        "stream_key": key,
        "rtc_server_id": "900",
        "rtc_channel_id": "901",
        "viewer_ids": [],
        "paused": False,
    }


def server_update(key: str, token: str) -> dict[str, object]:
    return {"stream_key": key, "guild_id": None, "endpoint": "127.0.0.1:7003", "token": token}


def stream_delete(key: str) -> dict[str, object]:
    return {"stream_key": key, "reason": "stream_ended", "unavailable": False}


OWN = StreamKey.parse(KEY_ME)
WATCHED = StreamKey.parse(KEY_ALICE)


def test_go_live_takes_only_credentials_that_answer_its_op18() -> None:
    reg = registry()
    assert OWN is not None
    reg.handle_dispatch("STREAM_CREATE", stream_create(KEY_ME), 1.0)
    reg.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ME, token="old"), 1.0)
    assert reg.fresh_credentials(OWN) is None  # nothing requested: nothing is fresh
    assert reg.request_go_live(GUILD, CHANNEL, 5.0) == OWN
    stale = reg.stream(OWN)
    assert stale is not None and stale.has_credentials
    assert reg.fresh_credentials(OWN) is None  # complete-looking, but from before op18
    reg.handle_dispatch("STREAM_CREATE", stream_create(KEY_ME), 5.5)
    reg.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ME, token="new"), 6.0)
    fresh = reg.fresh_credentials(OWN)
    assert fresh is not None and fresh.token == "new"
    assert reg.credentials_requested_at(OWN) == 5.0


def test_go_live_credentials_before_the_create_count_once_it_arrives() -> None:
    reg = registry()
    assert OWN is not None
    reg.request_go_live(GUILD, CHANNEL, 2.0)
    reg.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ME, token="early"), 2.1)
    assert reg.fresh_credentials(OWN) is None  # no STREAM_CREATE yet: kept pending
    reg.handle_dispatch("STREAM_CREATE", stream_create(KEY_ME), 2.2)
    fresh = reg.fresh_credentials(OWN)
    assert fresh is not None and fresh.token == "early"


def test_op19_for_our_stream_once_and_never_after_its_delete() -> None:
    reg = registry()
    assert OWN is not None
    assert reg.stop_go_live(OWN) is None  # never requested
    reg.request_go_live(GUILD, CHANNEL, 1.0)
    frame = reg.stop_go_live(OWN)
    assert frame is not None and frame.op == Op.STREAM_DELETE and frame.d == {"stream_key": KEY_ME}
    assert reg.stop_go_live(OWN) is None
    reg.request_go_live(GUILD, CHANNEL, 2.0)
    reg.handle_dispatch("STREAM_CREATE", stream_create(KEY_ME), 2.1)
    reg.handle_dispatch("STREAM_DELETE", stream_delete(KEY_ME), 3.0)
    assert reg.stop_go_live(OWN) is None  # the server ended it: no op19
    assert reg.credentials_requested_at(OWN) is None


def test_a_watch_follows_the_same_rule() -> None:
    reg = registry()
    assert WATCHED is not None
    alice = {
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "user_id": ALICE,
        "session_id": "s",
        "self_stream": True,
    }
    reg.handle_dispatch("VOICE_STATE_UPDATE", alice, 0.5)
    reg.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 1.0)
    reg.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ALICE, token="cached"), 1.0)
    reg.request_watch(WATCHED, 4.0)
    assert reg.fresh_credentials(WATCHED) is None
    reg.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ALICE, token="answer"), 4.5)
    fresh = reg.fresh_credentials(WATCHED)
    assert fresh is not None and fresh.token == "answer"
    assert reg.credentials_requested_at(WATCHED) == 4.0
    reg.handle_dispatch("STREAM_DELETE", stream_delete(KEY_ALICE), 5.0)
    assert reg.fresh_credentials(WATCHED) is None  # the watch ended with its stream


@pytest.mark.parametrize("leg", ["go_live", "watch"])
def test_freshness_is_by_order_when_the_stale_update_and_the_request_share_an_instant(leg: str) -> None:
    # A virtual clock (or one dispatch batch) gives equal times; order still tells stale from fresh.
    key_text, key = (KEY_ME, OWN) if leg == "go_live" else (KEY_ALICE, WATCHED)
    assert key is not None
    reg = registry()
    reg.handle_dispatch("STREAM_CREATE", stream_create(key_text), 3.0)
    reg.handle_dispatch("STREAM_SERVER_UPDATE", server_update(key_text, token="stale"), 3.0)
    if leg == "go_live":
        reg.request_go_live(GUILD, CHANNEL, 3.0)
    else:
        reg.request_watch(key, 3.0)
    assert reg.fresh_credentials(key) is None  # the same instant as the request, but before it
    reg.handle_dispatch("STREAM_SERVER_UPDATE", server_update(key_text, token="fresh"), 3.0)
    fresh = reg.fresh_credentials(key)
    assert fresh is not None and fresh.token == "fresh"  # the same instant, after the request
