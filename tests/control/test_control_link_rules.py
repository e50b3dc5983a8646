"""The transport rules (native first, share link when native is impossible) as a table."""

from __future__ import annotations

import pytest

from clank.control.link import DISABLED, NO_PUBLIC_URL, LinkAvailability
from clank.control.link_rules import (
    FALLBACK_AFTER_LOSS,
    TRANSPORT_RULES,
    TransportInput,
    choose_transport,
    fallback_after_loss,
)
from clank.control.resolve import Resolution

ME, ALICE, BOB, CAROL = "1", "41", "42", "43"
ON = LinkAvailability(True)

LIVE_ALICE = Resolution(ok=True, reason="single_sharer", target_user_id=ALICE, kind="go_live")
BOB_NOT_SHARING = Resolution.refuse("target_not_sharing", target_user_id=BOB)
NOBODY = Resolution.refuse("nobody_sharing")
AMBIGUOUS = Resolution.refuse("ambiguous_sharers", candidates=[ALICE, CAROL])
NOT_FOUND = Resolution.refuse("target_not_found")

# name: (resolution, preferred, explicit, requester, in_voice, native_error, link)
#    -> (rule, transport, target, reason)
CASES = {
    "native first when the target is live": (
        (LIVE_ALICE, None, False, None, {ALICE}, None, ON),
        ("native_first", "native", ALICE, None),
    ),
    "native first even when links are off": (
        (LIVE_ALICE, None, False, None, {ALICE}, None, DISABLED),
        ("native_first", "native", ALICE, None),
    ),
    "named user in voice but not sharing: link": (
        (BOB_NOT_SHARING, None, True, None, {BOB}, None, ON),
        ("not_sharing", "link", BOB, None),
    ),
    "named user not sharing, links off: the native refusal": (
        (BOB_NOT_SHARING, None, True, None, {BOB}, None, DISABLED),
        ("refused", None, BOB, "target_not_sharing"),
    ),
    "named user not sharing and not in voice: refused": (
        (BOB_NOT_SHARING, None, True, None, set(), None, ON),
        ("refused", None, BOB, "target_not_sharing"),
    ),
    "nobody shares: a link for the requester in voice": (
        (NOBODY, None, False, CAROL, {CAROL}, None, ON),
        ("not_sharing", "link", CAROL, None),
    ),
    "nobody shares, no requester: refused": (
        (NOBODY, None, False, None, set(), None, ON),
        ("refused", None, None, "nobody_sharing"),
    ),
    "several share: ambiguous, never a link": (
        (AMBIGUOUS, None, False, CAROL, {CAROL}, None, ON),
        ("refused", None, None, "ambiguous_sharers"),
    ),
    "native start failed (no credentials): link": (
        (LIVE_ALICE, None, False, None, {ALICE}, "no_credentials", ON),
        ("native_failed", "link", ALICE, None),
    ),
    "native start failed (transport): link": (
        (LIVE_ALICE, None, False, None, {ALICE}, "transport", ON),
        ("native_failed", "link", ALICE, None),
    ),
    "native start failed, links off: the native reason": (
        (LIVE_ALICE, None, False, None, {ALICE}, "no_credentials", NO_PUBLIC_URL),
        ("native_failed", None, ALICE, "no_credentials"),
    ),
    "native start failed, target left voice: the native reason": (
        (LIVE_ALICE, None, False, None, {ALICE}, "target_not_in_voice", ON),
        ("native_failed", None, ALICE, "target_not_in_voice"),
    ),
    "preferred link for a live user": (
        (LIVE_ALICE, "link", False, None, {ALICE}, None, ON),
        ("preferred_link", "link", ALICE, None),
    ),
    "preferred link without a target: the requester": (
        (AMBIGUOUS, "link", False, CAROL, {CAROL}, None, ON),
        ("preferred_link", "link", CAROL, None),
    ),
    "preferred link without target or requester": (
        (NOBODY, "link", False, None, set(), None, ON),
        ("preferred_link", None, None, "link_needs_target"),
    ),
    "preferred link for an unknown name": (
        (NOT_FOUND, "link", True, CAROL, {CAROL}, None, ON),
        ("preferred_link", None, None, "target_not_found"),
    ),
    "preferred link for someone not in voice": (
        (BOB_NOT_SHARING, "link", True, None, set(), None, ON),
        ("preferred_link", None, BOB, "target_not_in_voice"),
    ),
    "preferred link while links are off: refused with the reason": (
        (LIVE_ALICE, "link", False, None, {ALICE}, None, DISABLED),
        ("link_refused", None, None, "link_transport_unavailable"),
    ),
    "requester is ourselves: no link": (
        (NOBODY, None, False, ME, {ME}, None, ON),
        ("refused", None, None, "nobody_sharing"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_transport_table(name: str) -> None:
    (resolution, preferred, explicit, requester, in_voice, native_error, link), expected = CASES[name]
    choice = choose_transport(
        TransportInput(
            resolution=resolution,
            link=link,
            our_user_id=ME,
            preferred=preferred,
            explicit_target=explicit,
            requester_id=requester,
            in_voice=frozenset(in_voice),
            native_error=native_error,
        )
    )
    assert (choice.rule, choice.transport, choice.target_user_id, choice.reason) == expected


def test_every_rule_is_exercised_by_the_table() -> None:
    rules = {expected[0] for _, expected in CASES.values()}
    assert rules == {name for name, _ in TRANSPORT_RULES}


def test_disabled_reason_is_plain() -> None:
    choice = choose_transport(
        TransportInput(resolution=NOBODY, link=DISABLED, our_user_id=ME, preferred="link")
    )
    assert choice.detail == "the share-link transport is turned off (link.enabled = false)"


@pytest.mark.parametrize(
    ("reason", "requester", "channel", "link", "expected"),
    [
        ("transport", ALICE, "9", ON, True),
        ("no_credentials", ALICE, "9", ON, True),
        ("transport", None, "9", ON, False),  # the seed needs requester + text channel
        ("transport", ALICE, None, ON, False),
        ("transport", ALICE, "9", DISABLED, False),
        ("stopped", ALICE, "9", ON, False),
        ("stream_deleted", ALICE, "9", ON, False),  # the sharer ended it on purpose
        ("target_left", ALICE, "9", ON, False),
    ],
)
def test_fallback_after_a_running_watch_fails(
    reason: str, requester: str | None, channel: str | None, link: LinkAvailability, expected: bool
) -> None:
    assert fallback_after_loss(reason, requester_id=requester, channel_id=channel, link=link) is expected
    assert (reason in FALLBACK_AFTER_LOSS) or not expected
