"""``ClankService``: the agent surface — one implementation behind the Python API, the HTTP API
and the LLM tool schemas.

It reads and drives a voice session through :class:`SessionPort`, a deliberately small view of
what the session offers (its sharers and members, its watches and their latest frames, its role
statuses, and start/stop of a watch). The rules that pick a target live in
:mod:`clank.control.resolve`; this module turns them into actions and the seed's result shape::

    {ok, started, reused, reason, frameReady, transport, targetUserId, linkUrl, expiresInMinutes,
     spokenHint}

``frameReady`` is true only once a decoded frame exists for the bound watch (``reason``
``frame_context_ready``; before that ``waiting_for_frame_context``). ``transport: "link"`` is the
share-link fallback (:mod:`clank.control.link_flow`, rules in :mod:`clank.control.link_rules`);
without a :class:`~clank.control.link_flow.LinkFlow` it answers ``link_transport_unavailable``.

Calls that start or stop watches are serialized by one lock, so two agents asking at once get
one watch and a reuse rather than two watches of the same stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import trio

from clank.control.link import LinkAvailability
from clank.control.link_rules import TransportInput, choose_transport
from clank.control.model import (
    FrameView,
    LookResult,
    SessionStatus,
    StopResult,
    Transport,
    WatchResult,
    WatchView,
)
from clank.control.resolve import (
    ActiveWatch,
    Member,
    ResolveInput,
    SharerState,
    WatchKind,
    match_target,
    resolve_watch_target,
)
from clank.errors import WatchError
from clank.logging import get_logger

if TYPE_CHECKING:
    from clank.control.link_flow import LinkFlow
    from clank.control.voice_api import VoiceApi

log = get_logger("clank.control")

TRANSPORTS: Final[tuple[Transport, ...]] = ("native", "link")


class SessionPort(Protocol):
    """What the service needs from a voice session. Implemented by the session (or a test)."""

    @property
    def our_user_id(self) -> str: ...

    def in_voice(self) -> bool: ...

    def sharers(self) -> Sequence[SharerState]:
        """Users sharing Go Live and/or webcam (see :func:`clank.control.resolve.sharers_from_registry`)."""
        ...

    def members(self) -> Sequence[Member]:
        """Guild members we can name (at least those in our voice channel)."""
        ...

    def watches(self) -> Sequence[WatchView]:
        """Current watches, ended ones included until the session forgets them."""
        ...

    async def start_watch(self, user_id: str, kind: WatchKind) -> None:
        """Start a watch role for ``user_id``; returns once it is started (it may still be
        connecting). Raises :class:`WatchError` with a stable ``reason`` when it cannot start."""
        ...

    async def stop_watch(self, user_id: str, kind: WatchKind) -> None:
        """Stop that watch and wait for its role to end."""
        ...

    def latest_frame(self, user_id: str, kind: WatchKind) -> FrameView | None: ...

    def status(self) -> SessionStatus: ...


class ClankService:
    """The five agent tools over one voice session."""

    def __init__(
        self, session: SessionPort, links: LinkFlow | None = None, *, voice: VoiceApi | None = None
    ) -> None:
        self._port = session
        # With the share-link fallback, the service reads the session through the link-aware view
        # (link watches merged in); ``session`` stays the port it was given.
        self._session: SessionPort = session if links is None else links.port
        self._links = links
        self._lock = trio.Lock()
        self.voice = voice
        """Speak/listen/music/channels (:mod:`clank.control.voice_api`), when the runner made one."""

    @property
    def session(self) -> SessionPort:
        return self._port

    # --- snapshot helpers ----------------------------------------------------------------------

    def _active_watches(self) -> list[WatchView]:
        return [w for w in self._session.watches() if w.active]

    def _snapshot(self) -> ResolveInput:
        return ResolveInput(
            our_user_id=self._session.our_user_id,
            sharers=tuple(self._session.sharers()),
            members=tuple(self._session.members()),
            watches=tuple(
                ActiveWatch(w.user_id, w.kind) for w in self._active_watches() if w.transport == "native"
            ),
        )

    def _names(self, user_ids: Sequence[str]) -> tuple[tuple[str, str], ...]:
        members = {m.user_id: m.label for m in self._session.members()}
        return tuple((u, members.get(u, u)) for u in user_ids)

    def _link_availability(self) -> LinkAvailability:
        if self._links is None:
            return LinkAvailability(False, "link_not_configured", "the share-link fallback is not configured")
        return self._links.availability()

    def _transport_input(
        self, resolution: Any, target: str | None, preferred: str | None, requester_id: str | None
    ) -> TransportInput:
        links = self._links
        candidates = {resolution.target_user_id, requester_id} - {None}
        in_voice = frozenset(
            u for u in candidates if u is not None and links is not None and links.in_voice(u)
        )
        return TransportInput(
            resolution=resolution,
            link=self._link_availability(),
            our_user_id=self._session.our_user_id,
            preferred=preferred,
            explicit_target=bool(target and target.strip()),
            requester_id=requester_id,
            in_voice=in_voice,
        )

    def _frame_ready(self, user_id: str, kind: WatchKind) -> bool:
        return self._session.latest_frame(user_id, kind) is not None

    # --- start_screen_watch --------------------------------------------------------------------

    async def start_screen_watch(
        self,
        target: str | None = None,
        preferred_transport: str | None = None,
        requester_id: str | None = None,
    ) -> WatchResult:
        """Bind a watch by the seed's rules (see :mod:`clank.control.resolve`)."""
        if preferred_transport is not None and preferred_transport not in TRANSPORTS:
            return WatchResult(ok=False, reason="unknown_transport", detail=preferred_transport)
        if preferred_transport == "link" and not (availability := self._link_availability()).available:
            return WatchResult(
                ok=False, reason="link_transport_unavailable", transport="link", detail=availability.detail
            )
        if preferred_transport == "link":
            # A link offer does not start a native watch: it needs no start lock (and must not wait
            # for a native start in progress — the link flow's checkpoints decide between them).
            result = await self._start_watch(target, preferred_transport, requester_id)
        else:
            async with self._lock:
                result = await self._start_watch(target, preferred_transport, requester_id)
        if isinstance(result, WatchResult):
            return result
        user_id, requester, rule, native_reason = result
        assert self._links is not None
        return await self._links.offer(user_id, requester, rule=rule, native_reason=native_reason)

    async def _start_watch(
        self, target: str | None, preferred_transport: str | None, requester_id: str | None
    ) -> WatchResult | tuple[str, str | None, str, str | None]:
        """A native watch (or a refusal), or ``(user, requester, rule, native reason)`` for a link."""
        if not self._session.in_voice():
            return WatchResult(ok=False, reason="not_in_voice")
        resolution = resolve_watch_target(self._snapshot(), target, requester_id)
        # "nobody_sharing" is what pollers (the demo agent, auto_watch) hear until someone shares.
        (log.debug if resolution.reason == "nobody_sharing" else log.info)(
            "screen watch resolved",
            target=target,
            requester_id=requester_id,
            ok=resolution.ok,
            reason=resolution.reason,
            target_user_id=resolution.target_user_id,
            kind=resolution.kind,
            reuse=resolution.reuse,
        )
        choice = choose_transport(
            self._transport_input(resolution, target, preferred_transport, requester_id)
        )
        if choice.transport == "link" and self._links is not None and choice.target_user_id is not None:
            return (choice.target_user_id, requester_id, choice.rule, None)
        if choice.transport is None and choice.rule in {"preferred_link", "link_refused"}:
            return WatchResult(
                ok=False,
                reason=choice.reason or "link_transport_unavailable",
                transport="link",
                target_user_id=choice.target_user_id,
                detail=choice.detail,
            )
        if not resolution.ok or resolution.target_user_id is None or resolution.kind is None:
            return WatchResult(
                ok=False,
                reason=resolution.reason,
                target_user_id=resolution.target_user_id,
                candidates=resolution.candidates,
                candidate_names=self._names(resolution.candidates),
            )
        user_id, kind = resolution.target_user_id, resolution.kind
        if not resolution.reuse:
            try:
                await self._session.start_watch(user_id, kind)
            except WatchError as exc:
                log.info("screen watch refused", target_user_id=user_id, kind=kind, reason=exc.reason)
                fallback = choose_transport(
                    attrs.evolve(
                        self._transport_input(resolution, target, preferred_transport, requester_id),
                        native_error=exc.reason,
                    )
                )
                if fallback.transport == "link" and fallback.target_user_id:
                    return (fallback.target_user_id, requester_id, fallback.rule, exc.reason)
                return WatchResult(
                    ok=False,
                    reason=exc.reason,
                    transport="native",
                    target_user_id=user_id,
                    kind=kind,
                    detail=exc.detail or None,
                )
        if self._links is not None:
            self._links.note_native_watch(user_id, kind, requester_id)
        ready = self._frame_ready(user_id, kind)
        return WatchResult(
            ok=True,
            started=True,
            reused=resolution.reuse,
            reason="frame_context_ready" if ready else "waiting_for_frame_context",
            frame_ready=ready,
            transport="native",
            target_user_id=user_id,
            kind=kind,
            detail=resolution.reason,
        )

    # --- stop_screen_watch ---------------------------------------------------------------------

    async def stop_screen_watch(self, target: str | None = None) -> StopResult:
        """Stop the watch of ``target`` (any name form), or every watch without a target."""
        async with self._lock:
            watches = self._active_watches()
            if not watches:
                return StopResult(ok=False, reason="not_watching")
            if target is not None and target.strip():
                chosen = self._watches_named(target, watches)
                if chosen is None:
                    return StopResult(ok=False, reason="target_not_watched")
            else:
                chosen = watches
            for watch in chosen:
                await self._session.stop_watch(watch.user_id, watch.kind)
            return StopResult(ok=True, reason="stopped", stopped=tuple((w.user_id, w.kind) for w in chosen))

    def _watches_named(self, target: str, watches: Sequence[WatchView]) -> list[WatchView] | None:
        snapshot = ResolveInput(
            our_user_id=self._session.our_user_id,
            sharers=tuple(SharerState(w.user_id) for w in watches),
            members=tuple(self._session.members()),
        )
        match = match_target(target, snapshot)
        if match.user_id is None:
            return None
        chosen = [w for w in watches if w.user_id == match.user_id]
        return chosen or None

    # --- look_at_screen ------------------------------------------------------------------------

    def look_at_screen(self, target: str | None = None) -> LookResult:
        """The latest frame of the watch of ``target``; without a target, the freshest Go Live
        frame (webcam frames only when no Go Live watch has one)."""
        now = trio.current_time()
        watches = self._active_watches()
        if not watches:
            return LookResult(ok=False, reason="not_watching", now=now)
        if target is not None and target.strip():
            named = self._watches_named(target, watches)
            if named is None:
                return LookResult(ok=False, reason="target_not_watched", now=now)
            watches = named
        framed = [(w, f) for w in watches if (f := self._session.latest_frame(w.user_id, w.kind)) is not None]
        if not framed:
            first = watches[0]
            return LookResult(
                ok=False,
                reason="waiting_for_frame_context",
                target_user_id=first.user_id,
                kind=first.kind,
                now=now,
            )
        watch, frame = max(framed, key=lambda wf: (wf[0].kind == "go_live", wf[1].captured_at))
        return LookResult(
            ok=True,
            reason="frame_context_ready",
            target_user_id=watch.user_id,
            kind=watch.kind,
            frame=frame,
            now=now,
            notes=tuple(self._notes(watch.user_id, watch.kind)),
        )

    def _notes(self, user_id: str, kind: WatchKind) -> list[dict[str, Any]]:
        """Screen notes, when the session keeps them (an optional part of the port)."""
        notes = getattr(self._session, "notes", None)
        return [] if notes is None else list(notes(user_id, kind))

    # --- list_sharers / status -----------------------------------------------------------------

    def list_sharers(self) -> list[dict[str, Any]]:
        """Discovered Go Live and webcam users with their state and whether we watch them."""
        members = {m.user_id: m for m in self._session.members()}
        watched = {(w.user_id, w.kind): w for w in self._active_watches()}
        out: list[dict[str, Any]] = []
        for sharer in self._session.sharers():
            member = members.get(sharer.user_id)
            out.append(
                {
                    "userId": sharer.user_id,
                    "displayName": None if member is None else member.display_name,
                    "username": None if member is None else member.username,
                    "label": sharer.user_id if member is None else member.label,
                    "live": sharer.live,
                    "sharing": sharer.sharing,
                    "discovered": sharer.discovered,
                    "webcam": sharer.webcam,
                    "paused": sharer.paused,
                    "streamKey": sharer.stream_key,
                    "watching": [kind for (uid, kind) in watched if uid == sharer.user_id],
                }
            )
        return out

    def status(self) -> dict[str, Any]:
        """Roles, transport states, QoS, DAVE state with codes, and the watches."""
        now = trio.current_time()
        out = self._session.status().to_json()
        watches = []
        for w in self._session.watches():
            frame = self._session.latest_frame(w.user_id, w.kind)
            watches.append(
                {
                    "targetUserId": w.user_id,
                    "kind": w.kind,
                    "state": w.state,
                    "frames": w.frames,
                    # An ended watch keeps its last picture (frameSequence) but has no frame context.
                    "frameReady": frame is not None and w.active,
                    "frameSequence": None if frame is None else frame.sequence,
                    "frameAgeMs": None if frame is None else max(0, round((now - frame.captured_at) * 1000)),
                    "endedReason": w.ended_reason,
                    "uptimeS": round(now - w.started_at, 1),
                    "notes": self._notes(w.user_id, w.kind)[-3:],
                    "transport": w.transport,
                }
            )
        out["watches"] = watches
        out["link"] = (
            {"available": False, "reason": "link_not_configured"}
            if self._links is None
            else self._links.status_json()
        )
        if self.voice is not None:
            out["voiceIo"] = self.voice.status()
            for watch in watches:
                watch["streamAudio"] = self.voice.stream_audio_status(str(watch["targetUserId"]))
        return out
