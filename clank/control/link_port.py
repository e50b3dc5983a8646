"""A :class:`~clank.control.service.SessionPort` that adds share-link watches to a voice session's.

Link sessions enter the same surface as native watches: ``watches()`` lists them (kind ``go_live``
— it is a screen — with ``transport: "link"``), ``latest_frame`` serves their frames when the user
has no native frame, ``notes`` their screen notes, and ``status()`` a ``link_watch`` role per
session. Stopping a user's watch also ends their link. Everything else is the inner port's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from clank.control.link import LinkSession, LinkTransport
from clank.control.model import FrameView, RoleStatus, SessionStatus, WatchView
from clank.control.resolve import Member, SharerState, WatchKind
from clank.control.service import SessionPort

NotesFactory = Callable[[Any, str, str], Any]
"""``(handle with .target_user_id and .frames, user name, kind) -> ScreenNotes`` (the runner's)."""


def _note_json(note: Any) -> dict[str, Any]:
    return {
        "number": note.number,
        "text": note.text,
        "trigger": note.trigger,
        "changeScore": note.change_score,
        "provider": note.provider,
        "frameSequence": note.frame_sequence,
    }


class LinkAwarePort:
    """``inner`` plus the link sessions of ``transport``."""

    def __init__(
        self,
        inner: SessionPort,
        transport: LinkTransport,
        *,
        notes_factory: NotesFactory | None = None,
        name_of: Callable[[str], str] | None = None,
    ) -> None:
        self._inner = inner
        self._transport = transport
        self._notes_factory = notes_factory
        self._name_of = name_of or (lambda user_id: user_id)
        self._notes: dict[int, Any] = {}
        self._starting: dict[tuple[str, WatchKind], int] = {}
        transport.on_session_started(self._session_started)

    def __getattr__(self, name: str) -> Any:
        """Optional parts of the inner port (``verification_code`` ...) stay reachable."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    @property
    def inner(self) -> SessionPort:
        return self._inner

    @property
    def transport(self) -> LinkTransport:
        return self._transport

    def _session_started(self, session: LinkSession) -> None:
        if self._notes_factory is not None:
            self._notes[id(session)] = self._notes_factory(
                session, self._name_of(session.target_user_id), "go_live"
            )

    # --- SessionPort -------------------------------------------------------------------------

    @property
    def our_user_id(self) -> str:
        return self._inner.our_user_id

    def in_voice(self) -> bool:
        return self._inner.in_voice()

    def sharers(self) -> Sequence[SharerState]:
        return self._inner.sharers()

    def members(self) -> Sequence[Member]:
        return self._inner.members()

    def watches(self) -> Sequence[WatchView]:
        """The inner watches, then the live links (ended links are in ``status().link`` and the
        roles: a superseded link must not shadow the native watch that replaced it)."""
        return [*self._inner.watches(), *(self._view(s) for s in self._transport.live())]

    async def start_watch(self, user_id: str, kind: WatchKind) -> None:
        key = (user_id, kind)
        self._starting[key] = self._starting.get(key, 0) + 1
        try:
            await self._inner.start_watch(user_id, kind)
        finally:
            self._starting[key] -= 1
            if not self._starting[key]:
                del self._starting[key]

    async def stop_watch(self, user_id: str, kind: WatchKind) -> None:
        if kind == "go_live":
            self._transport.end_for(user_id, "stopped", trio.current_time())
        if self.native_view(user_id, kind) is not None:
            await self._inner.stop_watch(user_id, kind)

    def latest_frame(self, user_id: str, kind: WatchKind) -> FrameView | None:
        native = self._inner.latest_frame(user_id, kind)
        if native is not None or kind != "go_live":
            return native
        session = self._transport.live_for(user_id)
        frame = None if session is None else session.frames.latest
        return None if frame is None else FrameView.from_screen_frame(frame)

    def notes(self, user_id: str, kind: WatchKind) -> list[dict[str, Any]]:
        inner = getattr(self._inner, "notes", None)
        out: list[dict[str, Any]] = [] if inner is None else list(inner(user_id, kind))
        if kind == "go_live":
            session = self._transport.live_for(user_id)
            notes = None if session is None else self._notes.get(id(session))
            if notes is not None:
                out += [_note_json(n) for n in notes.notes()]
        return out

    def status(self) -> SessionStatus:
        status = self._inner.status()
        now = trio.current_time()
        roles = tuple(self._role(s, now) for s in self._transport.sessions())
        return attrs.evolve(status, roles=(*status.roles, *roles))

    # --- native watch facts for the link flow ------------------------------------------------

    def native_view(self, user_id: str, kind: WatchKind = "go_live") -> WatchView | None:
        """The newest native watch of that user and kind (ended ones included)."""
        found = [w for w in self._inner.watches() if w.user_id == user_id and w.kind == kind]
        return found[-1] if found else None

    def native_ready(self, user_id: str) -> bool:
        """A native Go Live watch of ``user_id`` is running and connected (or has a frame)."""
        view = self.native_view(user_id)
        if view is None or not view.active:
            return False
        return view.state == "watching" or self._inner.latest_frame(user_id, "go_live") is not None

    def native_connecting(self, user_id: str) -> bool:
        """A native Go Live watch of ``user_id`` is being started or is not connected yet."""
        if (user_id, "go_live") in self._starting:
            return True
        view = self.native_view(user_id)
        return view is not None and view.active and not self.native_ready(user_id)

    # --- views -------------------------------------------------------------------------------

    def _view(self, session: LinkSession) -> WatchView:
        return WatchView(
            user_id=session.target_user_id,
            kind="go_live",
            state=session.state,
            started_at=session.created_at,
            frames=session.accepted,
            ended_reason=session.end_reason,
            transport="link",
        )

    def _role(self, session: LinkSession, now: float) -> RoleStatus:
        state = {"offered": "connecting", "watching": "ready", "ended": "disconnected"}[session.state]
        age = None if session.last_frame_at is None else round((now - session.last_frame_at) * 1000)
        return RoleStatus(
            name="link_watch",
            kind="link_watch",
            state=state,
            target_user_id=session.target_user_id,
            transport={"transport": "link", "page": "sharing" if session.accepted else "waiting"},
            qos={
                "framesAccepted": session.accepted,
                "framesRejected": sum(session.rejected.values()),
                "lastFrameAgeMs": age,
                "expiresInS": round(session.time_left(now)) if session.active else None,
            },
            ended_reason=session.end_reason,
        )
