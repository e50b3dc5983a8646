"""The start_screen_watch target rules, as a table (pure; no trio)."""

from __future__ import annotations

import attrs
import pytest
from control_fakes import ALICE, BOB, CAROL, DAVE_USER, ME, NAMES, RegistrySession, stream_create, stream_key

from clank.control.resolve import (
    AUTO_BIND_RULES,
    ActiveWatch,
    Member,
    ResolveInput,
    SharerState,
    normalize_target,
    resolve_watch_target,
    sharers_from_registry,
)

MEMBERS = tuple(NAMES.values())


def live(user: str) -> SharerState:
    return SharerState(user, sharing=True, discovered=True)


def flag_only(user: str) -> SharerState:
    """Voice state says self_stream, no STREAM_CREATE yet."""
    return SharerState(user, sharing=True)


def discovered_only(user: str) -> SharerState:
    """STREAM_CREATE known, voice state not (yet) saying self_stream."""
    return SharerState(user, discovered=True)


def webcam(user: str) -> SharerState:
    return SharerState(user, webcam=True)


@attrs.frozen
class Case:
    name: str
    sharers: tuple[SharerState, ...]
    target: str | None = None
    requester: str | None = None
    watches: tuple[ActiveWatch, ...] = ()
    members: tuple[Member, ...] = MEMBERS
    # expectations
    ok: bool = True
    reason: str = ""
    user: str | None = None
    kind: str | None = "go_live"
    reuse: bool = False
    candidates: tuple[str, ...] = ()


CASES = [
    # --- explicit target: bound when it resolves, never retargeted
    Case(
        "target by display name", (live(ALICE), live(BOB)), target="Bob", reason="explicit_target", user=BOB
    ),
    Case("target by username", (live(ALICE), live(BOB)), target="bobby", reason="explicit_target", user=BOB),
    Case(
        "target by mention", (live(ALICE), live(BOB)), target=f"<@{BOB}>", reason="explicit_target", user=BOB
    ),
    Case(
        "target by nick mention",
        (live(ALICE), live(BOB)),
        target=f"<@!{BOB}>",
        reason="explicit_target",
        user=BOB,
    ),
    Case("target by id", (live(ALICE), live(BOB)), target=ALICE, reason="explicit_target", user=ALICE),
    Case("target with @ and case", (live(ALICE),), target="  @ALICE ", reason="explicit_target", user=ALICE),
    Case(
        "target only flagged live", (flag_only(CAROL),), target="carol", reason="explicit_target", user=CAROL
    ),
    Case(
        "target only discovered",
        (discovered_only(CAROL),),
        target="carol",
        reason="explicit_target",
        user=CAROL,
    ),
    Case(
        "target not sharing is refused, not retargeted to the only sharer",
        (live(ALICE),),
        target="Bob",
        ok=False,
        reason="target_not_sharing",
        user=BOB,
        kind=None,
        candidates=(ALICE,),
    ),
    Case(
        "target webcam fallback",
        (live(ALICE), webcam(BOB)),
        target="bob",
        reason="explicit_target_webcam",
        user=BOB,
        kind="webcam",
    ),
    Case(
        "target live and webcam prefers go live",
        (SharerState(BOB, sharing=True, discovered=True, webcam=True),),
        target="bob",
        reason="explicit_target",
        user=BOB,
    ),
    Case(
        "unknown target",
        (live(ALICE),),
        target="zed",
        ok=False,
        reason="target_not_found",
        user=None,
        kind=None,
    ),
    Case(
        "target that names two people",
        (live(ALICE), live(BOB)),
        target="sam",
        members=(Member(ALICE, "sam", "Sam A"), Member(BOB, "sam_b", "Sam")),
        ok=False,
        reason="target_ambiguous",
        user=None,
        kind=None,
        candidates=(ALICE, BOB),
    ),
    Case(
        "a live match beats a non-live namesake",
        (live(BOB),),
        target="sam",
        members=(Member(ALICE, "sam", None), Member(BOB, "bob", "Sam")),
        reason="explicit_target",
        user=BOB,
    ),
    Case(
        "target is ourselves",
        (live(ALICE),),
        target="clank",
        ok=False,
        reason="target_is_self",
        user=ME,
        kind=None,
    ),
    Case(
        "target known only as a sharer id",
        (live(CAROL),),
        target=CAROL,
        members=(),
        reason="explicit_target",
        user=CAROL,
    ),
    Case("blank target means no target", (live(ALICE),), target="   ", reason="single_sharer", user=ALICE),
    # --- no target: the auto-bind table
    Case(
        "requester sharing among several",
        (live(ALICE), live(BOB)),
        requester=BOB,
        reason="requester_sharing",
        user=BOB,
    ),
    Case(
        "requester has discovered go live only",
        (live(ALICE), discovered_only(BOB)),
        requester=BOB,
        reason="requester_sharing",
        user=BOB,
    ),
    Case(
        "exactly one sharer", (live(ALICE), webcam(BOB)), requester=CAROL, reason="single_sharer", user=ALICE
    ),
    Case("one sharer by flag only", (flag_only(ALICE),), reason="single_sharer", user=ALICE),
    Case(
        "single discovered stream", (discovered_only(ALICE),), reason="single_discovered_stream", user=ALICE
    ),
    Case(
        "several sharers and no target are refused",
        (live(ALICE), live(BOB)),
        requester=CAROL,
        ok=False,
        reason="ambiguous_sharers",
        user=None,
        kind=None,
        candidates=(ALICE, BOB),
    ),
    Case(
        "one flagged and another discovered are still several",
        (flag_only(ALICE), discovered_only(BOB)),
        ok=False,
        reason="ambiguous_sharers",
        user=None,
        kind=None,
        candidates=(ALICE, BOB),
    ),
    Case(
        "two discovered streams are refused",
        (discovered_only(ALICE), discovered_only(BOB)),
        ok=False,
        reason="ambiguous_sharers",
        user=None,
        kind=None,
        candidates=(ALICE, BOB),
    ),
    Case("nobody sharing", (), ok=False, reason="nobody_sharing", user=None, kind=None),
    Case(
        "webcams alone need a target",
        (webcam(ALICE),),
        ok=False,
        reason="nobody_sharing",
        user=None,
        kind=None,
    ),
    Case(
        "our own stream never binds",
        (live(ME),),
        requester=ME,
        ok=False,
        reason="nobody_sharing",
        user=None,
        kind=None,
    ),
    # --- reuse
    Case(
        "repeat for the same target reuses",
        (live(ALICE), live(BOB)),
        target="alice",
        watches=(ActiveWatch(ALICE, "go_live"),),
        reason="explicit_target",
        user=ALICE,
        reuse=True,
    ),
    Case(
        "repeat without target reuses",
        (live(ALICE),),
        watches=(ActiveWatch(ALICE, "go_live"),),
        reason="single_sharer",
        user=ALICE,
        reuse=True,
    ),
    Case(
        "a webcam watch is not reused for go live",
        (live(ALICE),),
        target="alice",
        watches=(ActiveWatch(ALICE, "webcam"),),
        reason="explicit_target",
        user=ALICE,
    ),
    Case(
        "another target while watching starts a new watch",
        (live(ALICE), live(BOB)),
        target="bob",
        watches=(ActiveWatch(ALICE, "go_live"),),
        reason="explicit_target",
        user=BOB,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_resolution_rules(case: Case) -> None:
    snapshot = ResolveInput(our_user_id=ME, sharers=case.sharers, members=case.members, watches=case.watches)
    result = resolve_watch_target(snapshot, case.target, case.requester)
    assert (result.ok, result.reason, result.target_user_id) == (case.ok, case.reason, case.user)
    assert result.kind == (case.kind if case.ok else None)
    assert result.reuse is case.reuse
    assert result.candidates == case.candidates


def test_every_auto_bind_rule_has_a_case() -> None:
    reasons = {c.reason for c in CASES if c.ok and c.target is None}
    assert {rule.reason for rule in AUTO_BIND_RULES} <= reasons


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [(f"<@{BOB}>", BOB), (f"<@!{BOB}>", BOB), ("@Bob", "bob"), ("  Big   Bob ", "big bob"), ("", "")],
)
def test_normalize_target(raw: str, normalized: str) -> None:
    assert normalize_target(raw) == normalized


def test_sharers_from_a_real_registry() -> None:
    session = RegistrySession()
    session.join(ALICE, stream=True)  # voice state first: provisional stream, flagged
    session.dispatch("STREAM_CREATE", stream_create(BOB))  # STREAM_CREATE before Bob's voice state
    session.join(CAROL, video=True)
    session.join(DAVE_USER)
    session.join(ME, stream=True)  # our own Go Live never counts
    states = {s.user_id: s for s in sharers_from_registry(session.registry)}
    assert set(states) == {ALICE, BOB, CAROL}
    assert (states[ALICE].sharing, states[ALICE].discovered) == (True, True)
    assert (states[BOB].sharing, states[BOB].discovered, states[BOB].stream_key) == (
        False,
        True,
        stream_key(BOB),
    )
    assert (states[CAROL].live, states[CAROL].webcam) == (False, True)
