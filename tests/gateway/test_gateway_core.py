"""Pure sync tests of the sans-io main-gateway core (clank/protocol/gateway.py)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clank.errors import (
    AuthenticationFailed,
    ConnectionClosed,
    MalformedMessage,
    TransportError,
    UsageError,
)
from clank.protocol.backoff import BackoffPolicy
from clank.protocol.gateway import GatewayCore
from clank.protocol.gateway_events import Close, Connect, Dispatch, Event, Ready, Resumed, SendFrame, Stop
from clank.protocol.gateway_policy import (
    CLOSE_POLICY,
    DEFAULT_CLOSE_RULE,
    INVALID_SESSION_WAIT,
    RESUMABLE_CLOSE_CODE,
    TRANSITIONS,
    CloseAction,
    Phase,
    close_rule,
    gateway_url,
)
from clank.wire.gateway import GatewayFrame, Op, ZlibStreamDeflater

TOKEN = "user-token-abc.def"
BASE = "ws://127.0.0.1:9000/"
RESUME_BASE = "ws://127.0.0.1:9001/resume"
INTERVAL_MS = 41250
INTERVAL = INTERVAL_MS / 1000


def make_core(seed: int = 0, **kwargs: Any) -> GatewayCore:
    return GatewayCore(url=BASE, token=TOKEN, rng=random.Random(seed), **kwargs)


def text(op: int, d: Any = None, s: int | None = None, t: str | None = None) -> str:
    return GatewayFrame(op=op, d=d, s=s, t=t).serialize()


def hello(interval_ms: int = INTERVAL_MS) -> str:
    return text(Op.HELLO, {"heartbeat_interval": interval_ms})


def ready_payload(session: str = "sess-1") -> dict[str, Any]:
    return {
        "v": 9,
        "user": {"id": "333", "username": "clank"},
        "session_id": session,
        "resume_gateway_url": RESUME_BASE,
        "guilds": [{"id": "111"}],
    }


def sent(events: list[Event]) -> list[GatewayFrame]:
    return [GatewayFrame.parse(e.text) for e in events if isinstance(e, SendFrame)]


def connected_core(seed: int = 0, now: float = 0.0, **kwargs: Any) -> GatewayCore:
    """A core that went start -> socket -> Hello -> Identify -> READY (seq 1)."""
    core = make_core(seed, **kwargs)
    core.start()
    core.connection_made(now)
    core.receive_text(hello(), now)
    core.receive_text(text(Op.DISPATCH, ready_payload(), s=1, t="READY"), now)
    assert core.phase is Phase.CONNECTED
    return core


def reconnect(core: GatewayCore, plan: Connect | Stop, now: float) -> list[Event]:
    assert isinstance(plan, Connect)
    core.connection_made(now)
    return core.receive_text(hello(), now)


# --------------------------------------------------------------------------- connect, identify


def test_start_connects_to_versioned_url() -> None:
    plan = make_core().start()
    assert plan == Connect(
        url=BASE + "?v=9&encoding=json", delay=0.0, resume=False, attempt=0, reason="start"
    )
    compressed = GatewayCore(url="wss://gateway.example", token=TOKEN, rng=random.Random(0), compress=True)
    assert compressed.start().url == "wss://gateway.example/?v=9&encoding=json&compress=zlib-stream"


def test_gateway_url_replaces_our_params_and_keeps_others() -> None:
    assert gateway_url("ws://h:1/gw?v=6&x=1", compress=False) == "ws://h:1/gw?x=1&v=9&encoding=json"
    for bad in ("http://h/", "h:1", "ws://"):
        with pytest.raises(UsageError):
            gateway_url(bad, compress=False)


def test_empty_token_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        GatewayCore(url=BASE, token="", rng=random.Random(0))


def test_hello_sends_user_identify() -> None:
    core = GatewayCore(
        url=BASE,
        token=TOKEN,
        rng=random.Random(0),
        properties={"os": "Linux", "browser": "clank", "device": ""},
        capabilities=16,
        presence={"status": "invisible", "since": 0, "activities": [], "afk": False},
    )
    core.start()
    core.connection_made(0.0)
    (frame,) = sent(core.receive_text(hello(), 0.0))
    assert frame.op == Op.IDENTIFY
    assert frame.d["token"] == TOKEN  # raw user token, no "Bot " prefix
    assert frame.d["properties"] == {"os": "Linux", "browser": "clank", "device": ""}
    assert frame.d["capabilities"] == 16
    assert frame.d["presence"]["status"] == "invisible"
    assert frame.d["compress"] is False
    assert "intents" not in frame.d
    assert core.phase is Phase.IDENTIFYING


def test_identify_frame_repr_hides_token() -> None:
    core = make_core()
    core.start()
    core.connection_made(0.0)
    (event,) = core.receive_text(hello(), 0.0)
    assert TOKEN not in repr(event)


def test_ready_is_parsed_and_passed_on_as_dispatch() -> None:
    core = make_core()
    core.start()
    core.connection_made(0.0)
    core.receive_text(hello(), 0.0)
    events = core.receive_text(text(Op.DISPATCH, ready_payload(), s=1, t="READY"), 1.0)
    ready, dispatch = events
    assert isinstance(ready, Ready)
    assert ready.info.user_id == "333"
    assert ready.info.session_id == "sess-1"
    assert ready.info.resume_gateway_url == RESUME_BASE
    assert ready.info.guild_ids == ("111",)
    assert "sess-1" not in repr(ready)
    assert dispatch == Dispatch("READY", ready_payload(), 1)
    assert core.phase is Phase.CONNECTED
    assert core.next_deadline() is not None  # heartbeats only; the handshake deadline is gone


@pytest.mark.parametrize("name", ["READY_SUPPLEMENTAL", "GUILD_CREATE", "VOICE_STATE_UPDATE", "NEW_THING"])
def test_other_dispatches_pass_through(name: str) -> None:
    core = connected_core()
    events = core.receive_text(text(Op.DISPATCH, {"x": 1}, s=2, t=name), 1.0)
    assert events == [Dispatch(name, {"x": 1}, 2)]


def test_sequence_tracks_last_non_null_and_drops_replayed_duplicates() -> None:
    core = connected_core()
    core.receive_text(text(Op.DISPATCH, {}, s=5, t="A"), 1.0)
    core.receive_text(text(Op.HEARTBEAT_ACK), 1.0)  # s = null keeps 5
    assert core.last_seq == 5
    assert core.receive_text(text(Op.DISPATCH, {}, s=4, t="OLD"), 1.0) == []
    assert core.statistics().duplicates_dropped == 1
    (beat,) = sent(core.receive_text(text(Op.HEARTBEAT), 2.0))
    assert beat == GatewayFrame(op=Op.HEARTBEAT, d=5)


def test_unknown_opcode_is_tolerated() -> None:
    core = connected_core()
    assert core.receive_text(text(99, {"new": True}), 1.0) == []


# --------------------------------------------------------------------------- heartbeats


def test_first_heartbeat_is_jittered_by_injected_rng() -> None:
    for seed in range(20):
        core = make_core(seed)
        core.start()
        core.connection_made(10.0)
        core.receive_text(hello(), 10.0)
        expected = 10.0 + INTERVAL * random.Random(seed).random()
        # The handshake deadline may come first; the beat is scheduled at the jittered time.
        core.receive_text(text(Op.DISPATCH, ready_payload(), s=1, t="READY"), 10.0)
        assert core.next_deadline() == pytest.approx(expected)
        assert 10.0 <= expected <= 10.0 + INTERVAL


def test_heartbeat_cadence_ack_and_latency() -> None:
    core = connected_core()
    first = core.next_deadline()
    assert first is not None
    assert core.tick(first - 0.001) == []
    (beat,) = sent(core.tick(first))
    assert beat == GatewayFrame(op=Op.HEARTBEAT, d=1)
    assert core.next_deadline() == pytest.approx(first + INTERVAL)
    core.receive_text(text(Op.HEARTBEAT_ACK), first + 0.25)
    assert core.statistics().last_latency == pytest.approx(0.25)
    now = first
    for _ in range(100):  # an hour of beats, every one acked
        now += INTERVAL
        assert len(sent(core.tick(now))) == 1
        core.receive_text(text(Op.HEARTBEAT_ACK), now + 0.01)
    stats = core.statistics()
    assert (stats.heartbeats_sent, stats.heartbeat_acks, stats.zombies) == (101, 101, 0)
    assert core.phase is Phase.CONNECTED


def test_missing_ack_is_a_zombie_that_resumes() -> None:
    core = connected_core()
    first = core.next_deadline()
    assert first is not None
    assert len(sent(core.tick(first))) == 1
    events = core.tick(first + INTERVAL)  # no ACK in between
    assert events == [Close(RESUMABLE_CLOSE_CODE, "heartbeat not acked (zombie)")]
    assert core.phase is Phase.CLOSING
    assert core.next_deadline() is None
    assert core.statistics().zombies == 1
    plan = core.connection_closed(1000, first + INTERVAL + 0.1)  # whatever code the socket shows
    assert isinstance(plan, Connect)
    assert plan.resume
    assert plan.url == RESUME_BASE + "?v=9&encoding=json"
    assert BackoffPolicy().initial <= plan.delay <= BackoffPolicy().cap


def test_server_heartbeat_request_is_answered_at_once() -> None:
    core = connected_core()
    core.receive_text(text(Op.DISPATCH, {}, s=7, t="X"), 1.0)
    (beat,) = sent(core.receive_text(text(Op.HEARTBEAT), 1.5))
    assert beat == GatewayFrame(op=Op.HEARTBEAT, d=7)


# --------------------------------------------------------------------------- handshake deadlines


def test_no_hello_in_time_closes_and_retries() -> None:
    core = make_core()
    core.start()
    core.connection_made(0.0)
    deadline = core.next_deadline()
    assert deadline is not None
    assert core.tick(deadline - 0.01) == []
    (close,) = core.tick(deadline)
    assert isinstance(close, Close)
    assert "Hello" in close.reason
    plan = core.connection_closed(None, deadline)
    assert isinstance(plan, Connect)
    assert not plan.resume


def test_no_ready_in_time_closes() -> None:
    core = make_core()
    core.start()
    core.connection_made(0.0)
    core.receive_text(hello(600_000), 0.0)  # beats far apart: only the handshake deadline matters
    deadline = core.next_deadline()
    assert deadline is not None
    (close,) = core.tick(deadline)
    assert isinstance(close, Close)
    assert "READY" in close.reason


# --------------------------------------------------------------------------- resume, op7, op9


def test_op7_reconnects_at_once_and_resumes_with_replay() -> None:
    core = connected_core()
    core.receive_text(text(Op.DISPATCH, {}, s=2, t="A"), 1.0)
    assert core.receive_text(text(Op.RECONNECT), 2.0) == [Close(RESUMABLE_CLOSE_CODE, "server asked (op7)")]
    assert core.receive_text(text(Op.DISPATCH, {}, s=3, t="LATE"), 2.0) == []  # ignored while closing
    plan = core.connection_closed(4000, 2.0)
    assert isinstance(plan, Connect)
    assert (plan.resume, plan.delay) == (True, 0.0)
    (resume,) = sent(reconnect(core, plan, 3.0))
    assert resume == GatewayFrame(op=Op.RESUME, d={"token": TOKEN, "session_id": "sess-1", "seq": 2})
    assert core.phase is Phase.RESUMING
    assert core.receive_text(text(Op.DISPATCH, {}, s=3, t="B"), 3.1) == [Dispatch("B", {}, 3)]
    assert core.receive_text(text(Op.DISPATCH, {}, s=4, t="C"), 3.1) == [Dispatch("C", {}, 4)]
    events = core.receive_text(text(Op.DISPATCH, None, s=5, t="RESUMED"), 3.2)
    assert events == [Resumed(replayed=2), Dispatch("RESUMED", None, 5)]
    stats = core.statistics()  # (read via statistics(): mypy narrowed core.phase above)
    assert stats.phase is Phase.CONNECTED
    assert stats.resumes == 1


@given(seed=st.integers(0, 2**32 - 1))
def test_op9_resumable_resumes_after_1_to_5_s(seed: int) -> None:
    core = connected_core(seed)
    (close,) = core.receive_text(text(Op.INVALID_SESSION, True), 5.0)
    assert isinstance(close, Close)
    assert close.code == RESUMABLE_CLOSE_CODE
    plan = core.connection_closed(None, 5.0)
    assert isinstance(plan, Connect)
    assert plan.resume
    assert INVALID_SESSION_WAIT[0] <= plan.delay <= INVALID_SESSION_WAIT[1]
    (frame,) = sent(reconnect(core, plan, 10.0))
    assert frame.op == Op.RESUME


@given(seed=st.integers(0, 2**32 - 1))
def test_op9_not_resumable_reidentifies_after_1_to_5_s(seed: int) -> None:
    core = connected_core(seed)
    (close,) = core.receive_text(text(Op.INVALID_SESSION, False), 5.0)
    assert isinstance(close, Close)
    plan = core.connection_closed(None, 5.0)
    assert isinstance(plan, Connect)
    assert not plan.resume
    assert plan.url == BASE + "?v=9&encoding=json"
    assert INVALID_SESSION_WAIT[0] <= plan.delay <= INVALID_SESSION_WAIT[1]
    assert core.ready_info is None
    (frame,) = sent(reconnect(core, plan, 10.0))
    assert frame.op == Op.IDENTIFY
    # The new session starts its sequence from scratch: s=1 is not a duplicate.
    ready = core.receive_text(text(Op.DISPATCH, ready_payload("sess-2"), s=1, t="READY"), 11.0)[0]
    assert isinstance(ready, Ready)
    assert ready.info.session_id == "sess-2"


def test_op9_while_identifying_identifies_again() -> None:
    core = make_core()
    core.start()
    core.connection_made(0.0)
    core.receive_text(hello(), 0.0)
    core.receive_text(text(Op.INVALID_SESSION, True), 0.5)
    plan = core.connection_closed(None, 0.5)
    assert isinstance(plan, Connect)
    assert not plan.resume


# --------------------------------------------------------------------------- close codes


CODES: list[int | None] = [*sorted(CLOSE_POLICY), 4006, 4015, 4999, 1006, None]


@pytest.mark.parametrize("code", CODES)
def test_close_code_policy_table(code: int | None) -> None:
    rule = close_rule(code)
    assert rule is (DEFAULT_CLOSE_RULE if code is None else CLOSE_POLICY.get(code, DEFAULT_CLOSE_RULE))
    core = connected_core()
    plan = core.connection_closed(code, 10.0)
    if rule.action is CloseAction.STOP:
        assert isinstance(plan, Stop)
        assert core.phase is Phase.STOPPED
        expected = AuthenticationFailed if code == 4004 else ConnectionClosed
        assert type(plan.error) is expected
        assert rule.meaning in str(plan.error)
        with pytest.raises(UsageError):
            core.connection_made(11.0)
        return
    assert isinstance(plan, Connect)
    assert core.phase is Phase.CONNECTING
    (frame,) = sent(reconnect(core, plan, 11.0))
    if rule.action is CloseAction.RESUME:
        assert plan.resume
        assert plan.url.startswith(RESUME_BASE)
        assert frame.op == Op.RESUME
    else:
        assert not plan.resume
        assert plan.url.startswith(BASE)
        assert frame.op == Op.IDENTIFY


def test_policy_names_the_required_codes() -> None:
    assert CLOSE_POLICY[4004].action is CloseAction.STOP
    assert {CLOSE_POLICY[c].action for c in (4007, 4009)} == {CloseAction.NEW_SESSION}
    assert {CLOSE_POLICY[c].action for c in range(4010, 4015)} == {CloseAction.STOP}
    assert CLOSE_POLICY[1000].action is CloseAction.RESUME


def test_4004_during_identify_stops_with_authentication_failed() -> None:
    core = make_core()
    core.start()
    core.connection_made(0.0)
    core.receive_text(hello(), 0.0)
    plan = core.connection_closed(4004, 0.1)
    assert isinstance(plan, Stop)
    assert isinstance(plan.error, AuthenticationFailed)
    assert "token" in str(plan.error)


# --------------------------------------------------------------------------- backoff, attempts


@given(attempt=st.integers(1, 10_000), seed=st.integers(0, 2**32 - 1))
def test_backoff_delay_within_bounds(attempt: int, seed: int) -> None:
    policy = BackoffPolicy(initial=0.5, cap=30.0)
    delay = policy.delay(attempt, random.Random(seed))
    assert policy.initial <= delay <= policy.cap


@given(seed=st.integers(0, 2**32 - 1))
def test_backoff_grows_until_cap(seed: int) -> None:
    policy = BackoffPolicy(initial=1.0, cap=60.0, jitter=0.5)
    rng = random.Random(seed)
    assert policy.delay(1, rng) == 1.0
    assert 4.0 <= policy.delay(4, rng) <= 8.0
    assert 30.0 <= policy.delay(50, rng) <= 60.0


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(UsageError):
        BackoffPolicy().delay(0, random.Random(0))


def test_first_connect_gives_up_after_max_attempts() -> None:
    core = make_core(max_initial_attempts=3)
    core.start()
    attempts = []
    for _ in range(2):
        plan = core.connect_failed("connection refused", 0.0)
        assert isinstance(plan, Connect)
        attempts.append(plan.attempt)
    assert attempts == [1, 2]  # the retries after the first attempt; the third failure stops
    plan = core.connect_failed("connection refused", 0.0)
    assert isinstance(plan, Stop)
    assert type(plan.error) is TransportError
    assert "unreachable after 3 attempts" in str(plan.error)
    assert "connection refused" in str(plan.error)
    assert core.phase is Phase.STOPPED


def test_after_ready_reconnects_are_unbounded_and_reset_on_success() -> None:
    core = connected_core(max_initial_attempts=2)
    plan: Connect | Stop = core.connection_closed(1006, 1.0)
    for _ in range(50):
        plan = core.connect_failed("refused", 2.0)
        assert isinstance(plan, Connect)
    assert isinstance(plan, Connect)
    assert plan.attempt == 51
    assert plan.delay <= BackoffPolicy().cap
    reconnect(core, plan, 3.0)
    core.receive_text(text(Op.DISPATCH, None, s=2, t="RESUMED"), 3.0)
    plan = core.connection_closed(1006, 4.0)
    assert isinstance(plan, Connect)
    assert plan.attempt == 1


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        '{"d": 1}',
        '{"op": "10"}',
        '{"op": 0, "d": {}, "s": 1}',
        '{"op": 10, "d": {}}',
        '{"op": 10, "d": {"heartbeat_interval": -5}}',
        '{"op": 10, "d": {"heartbeat_interval": Infinity}}',
        '{"op": 10, "d": {"heartbeat_interval": 1e400}}',
        '{"op": 10, "d": {"heartbeat_interval": true}}',
    ],
)
def test_garbage_before_ready_raises_malformed(raw: str) -> None:
    core = make_core()
    core.start()
    core.connection_made(0.0)
    with pytest.raises(MalformedMessage):
        core.receive_text(raw, 0.0)


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {"user": {"id": "1"}},
        {**ready_payload(), "session_id": 5},
        {**ready_payload(), "guilds": {}},
    ],
)
def test_malformed_ready_raises(payload: Any) -> None:
    core = make_core()
    core.start()
    core.connection_made(0.0)
    core.receive_text(hello(), 0.0)
    with pytest.raises(MalformedMessage):
        core.receive_text(text(Op.DISPATCH, payload, s=1, t="READY"), 0.0)


def test_abort_after_garbage_resumes_on_a_new_socket() -> None:
    core = connected_core()
    with pytest.raises(MalformedMessage):
        core.receive_text("{", 1.0)
    (close,) = core.abort("bad frame", 1.0)
    assert close == Close(RESUMABLE_CLOSE_CODE, "bad frame")
    plan = core.connection_closed(None, 1.0)
    assert isinstance(plan, Connect)
    assert plan.resume


def test_binary_without_compression_is_malformed() -> None:
    core = connected_core()
    with pytest.raises(MalformedMessage):
        core.receive_bytes(b"\x78\x9c", 1.0)


@given(raw=st.text(max_size=200))
def test_arbitrary_text_raises_only_malformed(raw: str) -> None:
    core = connected_core()
    try:
        core.receive_text(raw, 1.0)
    except MalformedMessage:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@given(
    op=st.sampled_from([int(op) for op in Op] + [12, 99]),
    d=json_values,
    s=st.none() | st.integers(-5, 2**63),
    t=st.none() | st.sampled_from(["READY", "RESUMED", "GUILD_CREATE", "X"]),
    phase_step=st.integers(0, 2),
)
def test_arbitrary_frames_raise_only_malformed(
    op: int, d: Any, s: int | None, t: str | None, phase_step: int
) -> None:
    core = make_core()
    core.start()
    core.connection_made(0.0)
    if phase_step >= 1:
        core.receive_text(hello(), 0.0)
    if phase_step >= 2:
        core.receive_text(text(Op.DISPATCH, ready_payload(), s=1, t="READY"), 0.0)
    raw = json.dumps({"op": op, "d": d, "s": s, "t": t})
    try:
        core.receive_text(raw, 1.0)
    except MalformedMessage:
        pass
    core.tick(1e6)  # whatever happened, the timers stay usable


def test_zlib_stream_frames_are_inflated_across_chunks() -> None:
    core = GatewayCore(url=BASE, token=TOKEN, rng=random.Random(0), compress=True)
    core.start()
    core.connection_made(0.0)
    deflater = ZlibStreamDeflater()
    blob = deflater.compress(hello())
    assert core.receive_bytes(blob[:3], 0.0) == []
    (identify,) = sent(core.receive_bytes(blob[3:], 0.0))
    assert identify.op == Op.IDENTIFY
    events = core.receive_bytes(deflater.compress(text(Op.DISPATCH, ready_payload(), s=1, t="READY")), 0.1)
    assert isinstance(events[0], Ready)
    with pytest.raises(MalformedMessage):
        core.receive_bytes(b"garbage\x00\x00\xff\xff", 0.2)


# --------------------------------------------------------------------------- senders


def test_voice_state_update_join_and_leave() -> None:
    core = make_core()
    join = GatewayFrame.parse(core.voice_state_update("111", "222", self_mute=True, self_video=True).text)
    assert join == GatewayFrame(
        op=Op.VOICE_STATE_UPDATE,
        d={"guild_id": "111", "channel_id": "222", "self_mute": True, "self_deaf": False, "self_video": True},
    )
    leave = GatewayFrame.parse(core.voice_state_update("111", None).text)
    assert leave.d["channel_id"] is None


def test_stream_senders() -> None:
    core = make_core()
    key = "guild:111:222:444"
    frames = {
        Op.STREAM_CREATE: core.stream_create("111", "222"),
        Op.STREAM_DELETE: core.stream_delete(key),
        Op.STREAM_WATCH: core.stream_watch(key),
        Op.STREAM_PING: core.stream_ping(key),
        Op.STREAM_SET_PAUSED: core.stream_set_paused(key, True),
    }
    parsed = {op: GatewayFrame.parse(f.text) for op, f in frames.items()}
    assert all(f.op == op for op, f in parsed.items())
    assert parsed[Op.STREAM_CREATE].d == {
        "type": "guild",
        "guild_id": "111",
        "channel_id": "222",
        "preferred_region": None,
    }
    for op in (Op.STREAM_DELETE, Op.STREAM_WATCH, Op.STREAM_PING):
        assert parsed[op].d == {"stream_key": key}
    assert parsed[Op.STREAM_SET_PAUSED].d == {"stream_key": key, "paused": True}
    assert GatewayFrame.parse(core.stream_create(None, "9").text).d["type"] == "call"
    with pytest.raises(UsageError):
        core.stream_watch("")


# --------------------------------------------------------------------------- phase table


def test_transition_table_covers_every_phase_and_stopped_is_terminal() -> None:
    assert set(TRANSITIONS) == set(Phase)
    assert TRANSITIONS[Phase.STOPPED] == frozenset()
    for phase, targets in TRANSITIONS.items():
        assert targets <= set(Phase), phase
        if phase is not Phase.STOPPED and phase is not Phase.IDLE:
            assert Phase.STOPPED in targets or Phase.CONNECTING in targets


def test_misuse_of_the_core_is_a_usage_error() -> None:
    core = make_core()
    with pytest.raises(UsageError):
        core.connection_made(0.0)  # before start()
    core.start()
    with pytest.raises(UsageError):
        core.receive_text(hello(), 0.0)  # before a socket exists


def test_passive_guild_updates_v2_is_never_announced() -> None:
    """Bit 14 makes Discord send large guilds' voice states as PASSIVE_UPDATE_V2, which clank
    does not read: sharers would go unseen. It is masked off whatever the setting says."""
    from clank.config import Settings
    from clank.protocol.gateway_policy import DEFAULT_CAPABILITIES, PASSIVE_GUILD_UPDATE_V2

    assert not DEFAULT_CAPABILITIES & PASSIVE_GUILD_UPDATE_V2
    assert Settings().discord.capabilities == DEFAULT_CAPABILITIES
    core = GatewayCore(url=BASE, token=TOKEN, rng=random.Random(0), capabilities=30717)
    core.start()
    core.connection_made(0.0)
    (frame,) = sent(core.receive_text(hello(), 0.0))
    assert frame.d["capabilities"] == 30717 & ~PASSIVE_GUILD_UPDATE_V2


@pytest.mark.parametrize(("code", "action"), [(4015, "new_session"), (4016, "stop")])
def test_user_session_close_codes_are_in_the_table(code: int, action: str) -> None:
    from clank.protocol.gateway_policy import close_rule

    assert close_rule(code).action.value == action
