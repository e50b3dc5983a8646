"""Which transport a ``start_screen_watch`` call uses: native Go Live or the share link. Pure rules.

The seed (clanky ``startVoiceScreenWatch`` / ``tryStartLinkFallback``) tries native first and
falls back to a link; restated over our own state, the :data:`TRANSPORT_RULES` table is tried in
order and the first rule that applies decides:

1. ``link_refused`` — ``preferred_transport: "link"`` while links are unavailable (turned off, not
   exposed, listener down): refused with ``link_transport_unavailable`` and the reason.
2. ``preferred_link`` — ``preferred_transport: "link"``: a link for the named user, else the
   requester (a refusal if neither is known or the user is not in our voice channel).
3. ``native_failed`` — the native watch could not be established (a :data:`FALLBACK_ON_START`
   reason) and the target is in voice: a link.
4. ``native_first`` — the target resolved to a live Go Live stream (or a named user's webcam):
   native.
5. ``not_sharing`` — the target is in voice but not sharing (``target_not_sharing``), or nobody
   shares and the requester is in voice (``nobody_sharing``): a link for that user.
6. ``refused`` — the native refusal stands (e.g. ``ambiguous_sharers``: several people share,
   a link would not know whose screen to ask for).

A running native watch that fails after start (a :data:`FALLBACK_AFTER_LOSS` reason) falls back to
a link only when the requester and the text channel are known, as the seed does
(:func:`fallback_after_loss`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Final

import attrs

from clank.control.link import LinkAvailability
from clank.control.resolve import Resolution

LINK_UNAVAILABLE: Final = "link_transport_unavailable"

FALLBACK_ON_START: Final = frozenset(
    {"no_credentials", "transport", "stream_deleted", "stream_full", "too_many_watches"}
)
"""``WatchError`` reasons of a native start that a link can work around (not: not in voice,
ourselves, out of scope — a link cannot help there either)."""
FALLBACK_AFTER_LOSS: Final = frozenset({"no_credentials", "transport"})
"""End reasons of a running native watch that call for a link (not ``stopped``, ``stream_deleted``
or ``target_left``: the sharer ended it on purpose)."""


@attrs.frozen
class TransportInput:
    """Everything the rules look at. ``in_voice``: user ids in our voice channel."""

    resolution: Resolution
    link: LinkAvailability
    our_user_id: str
    preferred: str | None = None
    explicit_target: bool = False
    requester_id: str | None = None
    in_voice: Collection[str] = frozenset()
    native_error: str | None = None


@attrs.frozen
class TransportChoice:
    """``transport`` None means refuse with ``reason``; ``rule`` names the rule that decided."""

    rule: str
    transport: str | None
    target_user_id: str | None = None
    reason: str | None = None
    detail: str | None = None


def link_target(inp: TransportInput) -> str | None:
    """Who a link would be for: the resolved user, else (without a named target) the requester."""
    if inp.resolution.target_user_id is not None:
        return inp.resolution.target_user_id
    if not inp.explicit_target and inp.requester_id and inp.requester_id != inp.our_user_id:
        return inp.requester_id
    return None


def _link_for(inp: TransportInput, rule: str) -> TransportChoice:
    target = link_target(inp)
    if target is None:
        reason = inp.resolution.reason if inp.explicit_target else "link_needs_target"
        return TransportChoice(rule, None, reason=reason, detail="name the user who should share")
    if target == inp.our_user_id:
        return TransportChoice(rule, None, target_user_id=target, reason="target_is_self")
    if target not in inp.in_voice:
        return TransportChoice(rule, None, target_user_id=target, reason="target_not_in_voice")
    return TransportChoice(rule, "link", target_user_id=target)


def _link_refused(inp: TransportInput) -> TransportChoice | None:
    if inp.preferred == "link" and not inp.link.available:
        return TransportChoice("link_refused", None, reason=LINK_UNAVAILABLE, detail=inp.link.detail)
    return None


def _preferred_link(inp: TransportInput) -> TransportChoice | None:
    return _link_for(inp, "preferred_link") if inp.preferred == "link" else None


def _native_failed(inp: TransportInput) -> TransportChoice | None:
    if inp.native_error is None:
        return None
    if inp.native_error in FALLBACK_ON_START and inp.link.available:
        choice = _link_for(inp, "native_failed")
        if choice.transport == "link":
            return choice
    return TransportChoice(
        "native_failed", None, target_user_id=inp.resolution.target_user_id, reason=inp.native_error
    )


def _native_first(inp: TransportInput) -> TransportChoice | None:
    if inp.resolution.ok:
        return TransportChoice("native_first", "native", target_user_id=inp.resolution.target_user_id)
    return None


def _not_sharing(inp: TransportInput) -> TransportChoice | None:
    if not inp.link.available or inp.resolution.reason not in {"target_not_sharing", "nobody_sharing"}:
        return None
    choice = _link_for(inp, "not_sharing")
    return choice if choice.transport == "link" else None


def _refused(inp: TransportInput) -> TransportChoice:
    return TransportChoice(
        "refused", None, target_user_id=inp.resolution.target_user_id, reason=inp.resolution.reason
    )


TRANSPORT_RULES: Final[tuple[tuple[str, Callable[[TransportInput], TransportChoice | None]], ...]] = (
    ("link_refused", _link_refused),
    ("preferred_link", _preferred_link),
    ("native_failed", _native_failed),
    ("native_first", _native_first),
    ("not_sharing", _not_sharing),
    ("refused", _refused),
)


def choose_transport(inp: TransportInput) -> TransportChoice:
    for _name, rule in TRANSPORT_RULES:
        choice = rule(inp)
        if choice is not None:
            return choice
    raise AssertionError("the last rule always decides")  # pragma: no cover


def fallback_after_loss(
    reason: str | None, *, requester_id: str | None, channel_id: str | None, link: LinkAvailability
) -> bool:
    """A running native watch ended with ``reason``: should a link be sent?"""
    return bool(reason in FALLBACK_AFTER_LOSS and requester_id and channel_id and link.available)
