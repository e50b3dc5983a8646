"""StreamRegistry under arbitrary dispatch sequences: never raises, invariants always hold."""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from clank.errors import MalformedMessage, WatchError
from clank.protocol.stream_events import StreamEvent, primary_order_key
from clank.protocol.stream_table import PENDING_CREDENTIALS_LIMIT
from clank.protocol.streams import StreamRegistry
from clank.wire.gateway_events import StreamKey

ME = "9"
GUILD = "1"
USERS = ["10", "11", "12", ME]
guilds = st.sampled_from([GUILD, GUILD, "2", None])
channels = st.sampled_from(["5", "6", None])
users = st.sampled_from(USERS)
rtc_ids = st.sampled_from(["700", "800", "1", "0", None, "x"])
valid_keys = st.builds(
    lambda kind, g, c, u: str(StreamKey.for_guild(g, c, u) if kind == "guild" else StreamKey.for_call(c, u)),
    st.sampled_from(["guild", "guild", "call"]),
    st.sampled_from([GUILD, "2"]),
    st.sampled_from(["5", "6"]),
    users,
)
raw_keys = (
    valid_keys | st.sampled_from(["test:10", "guild:1:5", "", "guild:1:5:10:1", "call:x:10"]) | st.integers()
)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
garbage = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=6,
)
DISPATCHES = [
    "VOICE_STATE_UPDATE",
    "STREAM_CREATE",
    "STREAM_SERVER_UPDATE",
    "STREAM_UPDATE",
    "STREAM_DELETE",
    "GUILD_CREATE",
    "READY_SUPPLEMENTAL",
    "TYPING_START",
]


def voice_state_payloads() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"user_id": users, "guild_id": guilds, "channel_id": channels},
        optional={"self_stream": st.booleans(), "self_video": st.booleans(), "session_id": st.just("s")},
    )


class RegistryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.registry = StreamRegistry(ME, guild_ids=[GUILD])
        self.now = 0.0
        self.events: list[StreamEvent] = []

    @initialize(unscoped=st.booleans())
    def choose_scope(self, unscoped: bool) -> None:
        if unscoped:
            self.registry = StreamRegistry(ME)

    def feed(self, name: str, data: object) -> list[StreamEvent]:
        events = self.registry.handle_dispatch(name, data, self.now)
        for event in events:
            assert event.name.startswith("stream_discovery_")
            event.log_fields()
        self.events += events
        return events

    @rule(seconds=st.floats(min_value=0, max_value=90, allow_nan=False))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(payload=voice_state_payloads())
    def voice_state(self, payload: dict[str, Any]) -> None:
        self.feed("VOICE_STATE_UPDATE", payload)

    @rule(key=raw_keys, rtc=rtc_ids, paused=st.booleans())
    def stream_create(self, key: object, rtc: str | None, paused: bool) -> None:
        self.feed(
            "STREAM_CREATE", {"stream_key": key, "rtc_server_id": rtc, "paused": paused, "viewer_ids": [ME]}
        )

    @rule(
        key=raw_keys,
        endpoint=st.sampled_from(["127.0.0.1:7003", None, ""]),
        token=st.sampled_from(["t", None]),
    )
    def server_update(self, key: object, endpoint: str | None, token: str | None) -> None:
        self.feed("STREAM_SERVER_UPDATE", {"stream_key": key, "endpoint": endpoint, "token": token})

    @rule(key=raw_keys, paused=st.none() | st.booleans())
    def stream_update(self, key: object, paused: bool | None) -> None:
        self.feed("STREAM_UPDATE", {"stream_key": key, "paused": paused})

    @rule(key=raw_keys, reason=st.sampled_from(["stream_ended", "unauthorized", None]))
    def stream_delete(self, key: object, reason: str | None) -> None:
        self.feed("STREAM_DELETE", {"stream_key": key, "reason": reason})
        if isinstance(key, str):
            try:
                parsed = StreamKey.parse(key)
            except MalformedMessage:
                return
            assert self.registry.stream(parsed) is None
            assert parsed not in self.registry.watches.watched_keys()

    @precondition(lambda self: self.registry.streams() or self.registry.watching_key is not None)
    @rule(data=st.data(), reason=st.sampled_from(["stream_ended", "stream_full"]))
    def delete_a_known_or_watched_stream(self, data: st.DataObject, reason: str) -> None:
        watched = self.registry.watching_key
        known = [s.key for s in self.registry.streams()] + ([watched] if watched is not None else [])
        key = data.draw(st.sampled_from(known))
        self.feed("STREAM_DELETE", {"stream_key": str(key), "reason": reason})
        assert self.registry.stream(key) is None
        assert key not in self.registry.watches.watched_keys()

    @precondition(lambda self: self.registry.streams())
    @rule(data=st.data())
    def credentials_for_a_known_stream(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from([s.key for s in self.registry.streams()]))
        self.feed(
            "STREAM_SERVER_UPDATE", {"stream_key": str(key), "endpoint": "127.0.0.1:7003", "token": "t"}
        )
        stream = self.registry.stream(key)
        assert stream is not None
        assert stream.endpoint == "127.0.0.1:7003"

    @rule(guild=st.sampled_from([GUILD, "2"]), states=st.lists(voice_state_payloads(), max_size=4))
    def guild_create(self, guild: str, states: list[dict[str, Any]]) -> None:
        self.feed("GUILD_CREATE", {"id": guild, "voice_states": states})

    @rule(guild=st.sampled_from([GUILD, "2"]), states=st.lists(voice_state_payloads(), max_size=4))
    def ready_supplemental(self, guild: str, states: list[dict[str, Any]]) -> None:
        self.feed("READY_SUPPLEMENTAL", {"guilds": [{"id": guild, "voice_states": states}]})

    @rule(name=st.sampled_from(DISPATCHES), data=garbage)
    def garbage_dispatch(self, name: str, data: object) -> None:
        self.feed(name, data)

    @rule(watch_target=users | valid_keys.map(StreamKey.parse))
    def request_watch(self, watch_target: str | StreamKey) -> None:
        try:
            request = self.registry.request_watch(watch_target, self.now)
        except WatchError as exc:
            assert exc.reason in {"target_not_in_voice", "own_stream", "out_of_scope"}
            return
        assert request.watch_frame.op == 20
        assert self.registry.watching_key == request.stream_key

    @precondition(lambda self: self.registry.watching_key is not None)
    @rule()
    def stop_watch(self) -> None:
        latest = self.registry.watching_key
        frame = self.registry.stop_watch()
        assert frame is not None
        assert frame.op == 19
        assert latest not in self.registry.watches.watched_keys()

    @rule()
    def keepalive(self) -> None:
        for frame in self.registry.keepalive_due(self.now):
            assert frame.op == 21
            assert frame.d["stream_key"] in {str(k) for k in self.registry.watches.watched_keys()}

    @invariant()
    def credentialed_streams_have_parsed_keys(self) -> None:
        own = self.registry.own_stream
        for stream in (*self.registry.streams(), *([own] if own is not None else [])):
            assert isinstance(stream.key, StreamKey)
            assert StreamKey.parse(str(stream.key)) == stream.key
            if stream.has_credentials:
                assert stream.rtc_server_id is not None
                assert stream.created

    @invariant()
    def own_stream_is_kept_apart(self) -> None:
        assert all(s.owner_id != ME for s in self.registry.streams())
        own = self.registry.own_stream
        assert own is None or own.owner_id == ME

    @invariant()
    def one_stream_per_user(self) -> None:
        owners = [s.owner_id for s in self.registry.streams()]
        assert len(owners) == len(set(owners))

    @invariant()
    def primary_is_the_top_ranked_stream(self) -> None:
        streams = self.registry.streams()
        preferred = self.registry.preferred_owner_id
        primary = self.registry.primary_stream()
        if not streams:
            assert primary is None
            return
        assert primary is not None
        best = min(primary_order_key(s, preferred) for s in streams)
        assert primary_order_key(primary, preferred) == best

    @invariant()
    def pending_credentials_are_bounded(self) -> None:
        assert self.registry.statistics().pending_credentials <= PENDING_CREDENTIALS_LIMIT

    @invariant()
    def sharers_cover_every_stream(self) -> None:
        sharers = {s.user_id for s in self.registry.sharers()}
        assert {s.owner_id for s in self.registry.streams()} <= sharers
        assert ME not in sharers


TestRegistryMachine = RegistryMachine.TestCase
# Bounded: a few seconds per run; CLANK_HYPOTHESIS_EXAMPLES still scales the profile elsewhere.
TestRegistryMachine.settings = settings(max_examples=60, stateful_step_count=30)
