"""Offering a share link, and keeping link sessions honest while they live.

:meth:`LinkFlow.offer` is the seed's ``tryStartLinkFallback`` restated:

1. a live link of the same target is **reused** (``reused: true`` and the minutes left; no new
   message);
2. checkpoint ``pre_create``: a native watch of the target that is already ready wins — no link;
3. the session is created and the message composed (:func:`offer_message`); if a native watch of
   the target is still connecting, it gets up to ``link.native_grace_s`` to come up;
4. checkpoint ``post_compose``: a native watch that became ready meanwhile wins — the session is
   ended, nothing is sent;
5. the message is posted to the text channel over REST (:class:`DiscordMessagePoster`).

Both checkpoints are counted (``status().link.suppressed``) and logged. The result carries
``linkUrl``, ``expiresInMinutes`` and a ``spokenHint`` that never contains the URL.

:meth:`LinkFlow.run` (a task of the runner's nursery) ends sessions that expired, whose target left
voice, or whose target now has a ready native watch (the page learns on its next post and stops),
and sends a link when a running native watch started with a known requester fails
(:func:`~clank.control.link_rules.fallback_after_loss`).
"""

from __future__ import annotations

import base64
import collections
import json
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import attrs
import httpx
import trio

from clank.config import ClientProperties
from clank.control.link import LinkAvailability, LinkSession, LinkTransport, sessions_json
from clank.control.link_port import LinkAwarePort
from clank.control.link_rules import fallback_after_loss
from clank.control.model import WatchResult
from clank.control.resolve import WatchKind
from clank.logging import get_logger

log = get_logger("clank.link")

SUPERVISE_INTERVAL: Final = 0.5
SETTLE_POLL: Final = 0.05
POST_TIMEOUT: Final = 10.0
SPOKEN_HINT: Final = (
    "I can't see your screen through Discord, so I sent you a link in the text chat. "
    "Open the link I sent and click Start sharing."
)
USER_AGENT: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "discord/1.0.9175 Chrome/128.0.6613.186 Electron/32.2.7 Safari/537.36"
)


def offer_message(target_user_id: str, url: str, minutes: int) -> str:
    """The text posted with the link (short, human; the only place the URL goes)."""
    unit = "minute" if minutes == 1 else "minutes"
    return (
        f"<@{target_user_id}> I can't see your screen through Discord right now. "
        f"Open this link to share it with me from your browser (it works for {minutes} {unit}): {url}"
    )


class MessagePoster(Protocol):
    async def post(self, channel_id: str, content: str) -> bool:
        """Post ``content``; False when it could not be sent (logged without the content)."""
        ...


class DiscordMessagePoster:
    """``POST /channels/{id}/messages`` with the headers the Discord desktop client sends."""

    def __init__(self, api_url: str, token: str, properties: ClientProperties) -> None:
        self._url = api_url.rstrip("/") + "/v9"
        self._token = token
        self._properties = properties
        self._nonce = 0

    def headers(self) -> dict[str, str]:
        props = attrs.asdict(self._properties)
        props["browser_user_agent"] = USER_AGENT
        super_properties = base64.b64encode(json.dumps(props, separators=(",", ":")).encode()).decode()
        return {
            "Authorization": self._token,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Super-Properties": super_properties,
            "X-Discord-Locale": self._properties.system_locale,
            "X-Debug-Options": "bugReporterEnabled",
            "Accept": "*/*",
        }

    async def post(self, channel_id: str, content: str) -> bool:
        self._nonce += 1
        nonce = str((int(trio.current_time() * 1000) << 22) + self._nonce)
        body = {"content": content, "nonce": nonce, "tts": False, "flags": 0}
        try:
            async with httpx.AsyncClient(timeout=POST_TIMEOUT) as client:
                response = await client.post(
                    f"{self._url}/channels/{channel_id}/messages", json=body, headers=self.headers()
                )
        except httpx.HTTPError as exc:
            log.warning("share link message not sent", channel_id=channel_id, error=type(exc).__name__)
            return False
        if response.status_code // 100 != 2:
            log.warning("share link message refused", channel_id=channel_id, status=response.status_code)
            return False
        return True


@attrs.define
class _NativeContext:
    requester_id: str
    kind: WatchKind


class LinkFlow:
    """Link offers and the link sessions' supervision over one :class:`LinkAwarePort`."""

    def __init__(
        self,
        transport: LinkTransport,
        port: LinkAwarePort,
        *,
        poster: MessagePoster | None,
        text_channel_id: str | Callable[[], str | None] | None,
        in_voice: Callable[[str], bool],
    ) -> None:
        self.transport = transport
        self.port = port
        self._poster = poster
        self._text_channel = text_channel_id
        self._in_voice = in_voice
        self._lock = trio.Lock()
        self._native: dict[tuple[str, WatchKind], _NativeContext] = {}
        self.suppressed: collections.Counter[str] = collections.Counter()
        self.sent = 0
        self.send_failed = 0

    @property
    def text_channel_id(self) -> str | None:
        """Where links are posted (a callable follows the voice channel when we move)."""
        channel = self._text_channel() if callable(self._text_channel) else self._text_channel
        return channel or None

    def availability(self) -> LinkAvailability:
        availability = self.transport.availability()
        if availability.available and (self._poster is None or self.text_channel_id is None):
            return LinkAvailability(False, "link_no_text_channel", "no text channel to post the link to")
        return availability

    def in_voice(self, user_id: str) -> bool:
        return self._in_voice(user_id)

    def note_native_watch(self, user_id: str, kind: WatchKind, requester_id: str | None) -> None:
        """A native watch was started for ``requester_id``: if it fails later, offer a link."""
        if requester_id:
            self._native[(user_id, kind)] = _NativeContext(requester_id, kind)

    # --- offer ---------------------------------------------------------------------------------

    def _native_result(self, target: str, stage: str) -> WatchResult:
        self.suppressed[stage] += 1
        log.info("share link suppressed: native watch ready", target_user_id=target, stage=stage)
        ready = self.port.inner.latest_frame(target, "go_live") is not None
        return WatchResult(
            ok=True,
            started=True,
            reused=True,
            reason="native_watch_already_active",
            frame_ready=ready,
            transport="native",
            target_user_id=target,
            kind="go_live",
            detail=f"link_suppressed_{stage}",
        )

    def _link_result(self, session: LinkSession, *, reused: bool, rule: str) -> WatchResult:
        now = trio.current_time()
        ready = session.frames.latest is not None
        return WatchResult(
            ok=True,
            started=True,
            reused=reused,
            reason="frame_context_ready" if ready else "waiting_for_frame_context",
            frame_ready=ready,
            transport="link",
            target_user_id=session.target_user_id,
            kind="go_live",
            link_url=session.url,
            expires_in_minutes=session.expires_in_minutes(now),
            detail=rule,
            spoken_hint=SPOKEN_HINT,
        )

    async def offer(
        self, target: str, requester_id: str | None, *, rule: str, native_reason: str | None = None
    ) -> WatchResult:
        async with self._lock:
            availability = self.availability()
            if not availability.available:
                return WatchResult(
                    ok=False,
                    reason="link_transport_unavailable",
                    transport="link",
                    target_user_id=target,
                    detail=availability.detail,
                )
            existing = self.transport.live_for(target)
            if existing is not None:
                log.info("share link reused", target_user_id=target, rule=rule)
                return self._link_result(existing, reused=True, rule=rule)
            if self.port.native_ready(target):
                return self._native_result(target, "pre_create")
            channel = self.text_channel_id
            assert channel is not None and self._poster is not None  # availability checked it
            session = self.transport.create(
                target, requester_id=requester_id, channel_id=channel, now=trio.current_time()
            )
            content = offer_message(target, session.url, session.expires_in_minutes(trio.current_time()))
            await self._settle_native(target)
            if self.port.native_ready(target):
                self.transport.end(session, "superseded_by_native", trio.current_time())
                return self._native_result(target, "post_compose")
            if not await self._poster.post(channel, content):
                self.send_failed += 1
                self.transport.end(session, "message_failed", trio.current_time())
                return WatchResult(
                    ok=False,
                    reason="link_message_failed",
                    transport="link",
                    target_user_id=target,
                    detail="the link could not be posted to the text channel",
                )
            self.sent += 1
            log.info(
                "share link sent",
                target_user_id=target,
                requester_id=requester_id,
                channel_id=channel,
                rule=rule,
                native_reason=native_reason,
            )
            return self._link_result(session, reused=False, rule=rule)

    async def _settle_native(self, target: str) -> None:
        """Give a connecting native watch of ``target`` up to ``native_grace_s`` to come up."""
        # The session port has no readiness event to wait on: poll it (cheap attribute reads).
        with trio.move_on_after(self.transport.settings.native_grace_s):
            while True:
                if not self.port.native_connecting(target):
                    return
                await trio.sleep(SETTLE_POLL)

    # --- supervision ---------------------------------------------------------------------------

    async def run(self) -> None:
        """End sessions that must die; send links for failed native watches. Runs until cancelled."""
        try:
            while True:
                await self.check()
                await trio.sleep(SUPERVISE_INTERVAL)
        finally:
            self.transport.close(trio.current_time())

    async def check(self) -> None:
        now = trio.current_time()
        self.transport.expire(now)
        for session in self.transport.live():
            if not self._in_voice(session.target_user_id):
                self.transport.end(session, "target_left", now)
            elif self.port.native_ready(session.target_user_id):
                self.transport.end(session, "superseded_by_native", now)
        for (user_id, kind), context in list(self._native.items()):
            view = self.port.native_view(user_id, kind)
            if view is None or view.active:
                continue
            del self._native[(user_id, kind)]
            if fallback_after_loss(
                view.ended_reason,
                requester_id=context.requester_id,
                channel_id=self.text_channel_id,
                link=self.availability(),
            ) and self._in_voice(user_id):
                log.info(
                    "native watch lost: offering a share link",
                    target_user_id=user_id,
                    reason=view.ended_reason,
                )
                await self.offer(
                    user_id, context.requester_id, rule="native_lost", native_reason=view.ended_reason
                )

    def status_json(self) -> dict[str, Any]:
        now = trio.current_time()
        availability = self.availability()
        stats = self.transport.statistics()
        counters: Mapping[str, Any] = {
            "created": stats.created,
            "framesAccepted": stats.accepted,
            "framesRejected": dict(stats.rejected),
            "unknownToken": stats.unknown_token,
            "ended": dict(stats.ended),
            "messagesSent": self.sent,
            "messagesFailed": self.send_failed,
        }
        return {
            "available": availability.available,
            "reason": availability.reason,
            "detail": availability.detail or None,
            "suppressed": {
                "pre_create": self.suppressed["pre_create"],
                "post_compose": self.suppressed["post_compose"],
            },
            "counters": dict(counters),
            "sessions": sessions_json(self.transport.sessions(), now),
        }
