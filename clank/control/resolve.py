"""Which user a ``start_screen_watch`` call binds to: pure rules over a snapshot, no I/O.

The rules are the seed's (clanky ``src/bot/screenShare.ts`` ``tryStartNativeScreenWatch`` and
``resolveRequestedScreenWatchTarget``, ``src/voice/nativeDiscordScreenShare.ts``
``resolveNativeDiscordScreenWatchTarget``), restated over our own state:

* A user is **live** when their voice state says ``self_stream`` (*sharing*) or the stream
  registry knows a stream of theirs (*discovered* Go Live state, e.g. a STREAM_CREATE that beat
  the voice state). A user with ``self_video`` has a **webcam** on.
* **Explicit target** (display name, username, ``<@id>`` mention or id): matched against the
  members we know and the sharers; a unique match among live users wins, else a unique match
  among everyone. It is bound when it resolves and never silently retargeted: live → Go Live
  watch, not live but webcam on → webcam watch, neither → refused ``target_not_sharing``.
* **No target**: the :data:`AUTO_BIND_RULES` table, in order — the requester is live; exactly
  one user is sharing; exactly one discovered stream (and nobody's voice state says sharing).
  Several live users → refused ``ambiguous_sharers`` (the candidates are listed); nobody live →
  ``nobody_sharing``. Without a target we never pick a webcam: that needs a name.
  One deliberate difference: clanky bound "the single active sharer" even when another user had
  a discovered stream; here any second live user makes the call ambiguous, because several
  sharers without a target must be refused.
* A call that resolves to a target we already watch (same user, same kind) is a **reuse**.

Everything here is synchronous and deterministic so the rules can be tested as a table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Final, Literal

import attrs

from clank.protocol.stream_events import Sharer
from clank.protocol.streams import StreamRegistry

WatchKind = Literal["go_live", "webcam"]


@attrs.frozen
class Member:
    """A guild member as far as naming goes. ``display_name`` is the nick / global name."""

    user_id: str
    username: str | None = None
    display_name: str | None = None

    @property
    def label(self) -> str:
        return self.display_name or self.username or self.user_id


@attrs.frozen
class SharerState:
    """One user's video state for resolution (built from :class:`clank.protocol.streams.Sharer`)."""

    user_id: str
    sharing: bool = False  # voice state self_stream
    discovered: bool = False  # the stream registry knows a stream of this user
    webcam: bool = False  # voice state self_video
    stream_key: str | None = None
    paused: bool = False

    @property
    def live(self) -> bool:
        return self.sharing or self.discovered

    @classmethod
    def from_sharer(cls, sharer: Sharer, *, self_stream: bool) -> SharerState:
        """``self_stream`` comes from the member's voice state (``Sharer.go_live`` also counts a
        known stream, which is what ``discovered`` records separately)."""
        return cls(
            user_id=sharer.user_id,
            sharing=self_stream,
            discovered=sharer.stream is not None,
            webcam=sharer.webcam,
            stream_key=None if sharer.stream is None else str(sharer.stream.key),
            paused=sharer.stream is not None and sharer.stream.paused,
        )


@attrs.frozen
class ActiveWatch:
    user_id: str
    kind: WatchKind


@attrs.frozen
class ResolveInput:
    """Everything the rules look at."""

    our_user_id: str
    sharers: tuple[SharerState, ...] = ()
    members: tuple[Member, ...] = ()
    watches: tuple[ActiveWatch, ...] = ()

    def sharer(self, user_id: str) -> SharerState | None:
        for sharer in self.sharers:
            if sharer.user_id == user_id:
                return sharer
        return None

    def live_user_ids(self) -> tuple[str, ...]:
        return tuple(s.user_id for s in self.sharers if s.live and s.user_id != self.our_user_id)


@attrs.frozen
class Resolution:
    """The outcome. ``ok`` means bind ``target_user_id`` with a ``kind`` watch; ``reason`` is a
    stable code (the rule that bound it, or why nothing was bound)."""

    ok: bool
    reason: str
    target_user_id: str | None = None
    kind: WatchKind | None = None
    reuse: bool = False
    candidates: tuple[str, ...] = ()  # user ids, for refusals that a target would fix

    @classmethod
    def refuse(
        cls, reason: str, *, target_user_id: str | None = None, candidates: Iterable[str] = ()
    ) -> Resolution:
        return cls(ok=False, reason=reason, target_user_id=target_user_id, candidates=tuple(candidates))


# --- target matching --------------------------------------------------------------------------

_MENTION = re.compile(r"^<@!?(\d+)>$")
_SPACES = re.compile(r"\s+")


def normalize_target(text: str) -> str:
    """A mention becomes its id; otherwise drop leading ``@``, collapse spaces, lowercase."""
    raw = text.strip()
    mention = _MENTION.match(raw)
    if mention:
        return mention.group(1)
    return _SPACES.sub(" ", raw.lstrip("@")).strip().lower()


def _names(member: Member) -> set[str]:
    return {normalize_target(n) for n in (member.display_name, member.username) if n}


def _matches(user_id: str, member: Member | None, wanted: str) -> bool:
    if user_id == wanted:
        return True
    return member is not None and wanted in _names(member)


@attrs.frozen
class TargetMatch:
    user_id: str | None
    reason: Literal["resolved", "target_not_found", "target_ambiguous"]
    candidates: tuple[str, ...] = ()


def match_target(target: str, snapshot: ResolveInput) -> TargetMatch:
    """Find the user ``target`` names. Live users are preferred over other members (two people
    called "sam" where one is streaming: that one)."""
    wanted = normalize_target(target)
    if not wanted:
        return TargetMatch(None, "target_not_found")
    members = {m.user_id: m for m in snapshot.members}
    user_ids = list(members)
    user_ids += [s.user_id for s in snapshot.sharers if s.user_id not in members]
    found = [uid for uid in user_ids if _matches(uid, members.get(uid), wanted)]
    live = [uid for uid in found if (s := snapshot.sharer(uid)) is not None and s.live]
    for group in (live, found):
        if len(group) == 1:
            return TargetMatch(group[0], "resolved")
        if len(group) > 1:
            return TargetMatch(None, "target_ambiguous", tuple(sorted(group)))
    return TargetMatch(None, "target_not_found")


# --- the no-target rules (a table) ------------------------------------------------------------


@attrs.frozen
class AutoBindRule:
    """``pick`` returns the user to bind, or ``None`` when the rule does not apply."""

    reason: str
    pick: Callable[[ResolveInput, str | None], str | None]


def _requester_live(snapshot: ResolveInput, requester_id: str | None) -> str | None:
    if requester_id is None or requester_id == snapshot.our_user_id:
        return None
    sharer = snapshot.sharer(requester_id)
    return requester_id if sharer is not None and sharer.live else None


def _single_sharing(snapshot: ResolveInput, _requester: str | None) -> str | None:
    live = snapshot.live_user_ids()
    if len(live) != 1:
        return None  # someone else's discovered stream makes it a choice (clanky ignored those)
    sharer = snapshot.sharer(live[0])
    return live[0] if sharer is not None and sharer.sharing else None


def _single_discovered(snapshot: ResolveInput, _requester: str | None) -> str | None:
    others = [s for s in snapshot.sharers if s.user_id != snapshot.our_user_id]
    if any(s.sharing for s in others):
        return None  # people are sharing: only the rules above may choose among them
    discovered = [s.user_id for s in others if s.discovered]
    return discovered[0] if len(discovered) == 1 else None


AUTO_BIND_RULES: Final[tuple[AutoBindRule, ...]] = (
    AutoBindRule("requester_sharing", _requester_live),
    AutoBindRule("single_sharer", _single_sharing),
    AutoBindRule("single_discovered_stream", _single_discovered),
)
"""Tried in order when no target is given; the first that picks someone binds them."""


# --- resolution -------------------------------------------------------------------------------


def _reused(snapshot: ResolveInput, user_id: str, kind: WatchKind) -> bool:
    return ActiveWatch(user_id, kind) in snapshot.watches


def _bind(snapshot: ResolveInput, user_id: str, kind: WatchKind, reason: str) -> Resolution:
    return Resolution(
        ok=True,
        reason=reason,
        target_user_id=user_id,
        kind=kind,
        reuse=_reused(snapshot, user_id, kind),
    )


def resolve_explicit(target: str, snapshot: ResolveInput) -> Resolution:
    match = match_target(target, snapshot)
    if match.user_id is None:
        return Resolution.refuse(match.reason, candidates=match.candidates)
    user_id = match.user_id
    if user_id == snapshot.our_user_id:
        return Resolution.refuse("target_is_self", target_user_id=user_id)
    sharer = snapshot.sharer(user_id)
    if sharer is not None and sharer.live:
        return _bind(snapshot, user_id, "go_live", "explicit_target")
    if sharer is not None and sharer.webcam:
        return _bind(snapshot, user_id, "webcam", "explicit_target_webcam")
    return Resolution.refuse(
        "target_not_sharing", target_user_id=user_id, candidates=sorted(snapshot.live_user_ids())
    )


def resolve_automatic(snapshot: ResolveInput, requester_id: str | None) -> Resolution:
    for rule in AUTO_BIND_RULES:
        user_id = rule.pick(snapshot, requester_id)
        if user_id is not None:
            return _bind(snapshot, user_id, "go_live", rule.reason)
    live = snapshot.live_user_ids()
    if live:
        return Resolution.refuse("ambiguous_sharers", candidates=sorted(live))
    return Resolution.refuse("nobody_sharing")


def resolve_watch_target(
    snapshot: ResolveInput, target: str | None = None, requester_id: str | None = None
) -> Resolution:
    """Apply the rules: an explicit (non-blank) ``target`` first, else the automatic table."""
    if target is not None and target.strip():
        return resolve_explicit(target, snapshot)
    return resolve_automatic(snapshot, requester_id)


def sharers_from_registry(registry: StreamRegistry) -> tuple[SharerState, ...]:
    """Snapshot a stream registry's sharers (our own user excluded) for the rules."""

    def self_stream(user_id: str) -> bool:
        member = registry.member(user_id)
        return member is not None and member.self_stream

    return tuple(
        SharerState.from_sharer(s, self_stream=self_stream(s.user_id))
        for s in registry.sharers()
        if s.user_id != registry.user_id
    )
