"""Audio receive core (sans-io): SSRC -> user, sequence tracking, DAVE decrypt, speaking state.

The voice role's UDP receive loop hands every transport-decrypted Opus RTP packet to
:meth:`AudioReceiveCore.receive` synchronously (discord-protocol.md §4.5 step 7). The core

- maps the SSRC to a user from op5 speaking (and op12 ``audio_ssrc``); op13 removes the user;
- tracks the sequence per SSRC: duplicates and stale (late, already concealed) packets are
  dropped and counted, gaps become ``lost_before`` on the next packet so the decoder can run
  packet-loss concealment for exactly the missing frames;
- DAVE-decrypts each Opus packet (one packet = one DAVE frame) through an injected callable
  that returns ``None`` on failure (counted, never fatal);
- detects the Opus silence frame ``F8 FF FE`` (before and after DAVE: a sender may encrypt it):
  five of them mean the speaker stopped; a gap of ``silence_timeout`` seconds without packets also
  ends speaking (``tick``);
- holds audio from an SSRC nobody has announced yet (op5 late or never sent: Discord does not
  promise op5 before media) for ``EARLY_AUDIO_S`` (bounded per SSRC and in SSRC count) and
  trial-decrypts it with the DAVE keys of the members we know (op11/op12/op5 users, through an
  injected ``trial`` callable that never counts failures); a success binds the SSRC to that user
  and the held audio is delivered, as it is when op5 arrives late. Known SSRCs never wait.

Time is an argument (``now``, seconds). Output is a list of events; the core never logs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import attrs

__all__ = [
    "DROP_REASONS",
    "MAX_CONCEALED_FRAMES",
    "OPUS_SILENCE",
    "SILENCE_FRAMES_TO_STOP",
    "AudioPacket",
    "AudioReceiveCore",
    "AudioReceiveStatistics",
    "DaveDecrypt",
    "EarlyAudioStatistics",
    "SpeakingStarted",
    "SpeakingStopped",
    "TrialDecrypt",
    "UserAudioStatistics",
]

OPUS_SILENCE: Final = b"\xf8\xff\xfe"
SILENCE_FRAMES_TO_STOP: Final = 5
"""Discord senders emit five silence frames when they stop talking (§5.1)."""
DEFAULT_SILENCE_TIMEOUT: Final = 0.5
"""Seconds without packets after which a speaker counts as stopped (lost silence frames)."""
MAX_CONCEALED_FRAMES: Final = 10
"""A larger gap is a discontinuity (speaker paused or a burst loss): no concealment, decoder reset."""
SEQUENCE_WINDOW: Final = 64
"""Packets behind the highest sequence we still recognise as duplicates; older ones are stale."""

DROP_REASONS: Final = ("unknown_ssrc", "duplicate", "stale", "dave_decrypt", "empty")
EARLY_AUDIO_S: Final = 1.0
"""Seconds of audio held per unannounced SSRC while we find out who sends it."""
EARLY_AUDIO_PACKETS: Final = 64
"""At most this many packets held per unannounced SSRC (the oldest go first)."""
EARLY_AUDIO_SSRCS: Final = 16
"""At most this many unannounced SSRCs held at once (the least recently heard goes first)."""
EARLY_TRIAL_PACKETS: Final = 100
"""Packets of one unannounced SSRC we trial-decrypt before giving up until op5 arrives."""

DaveDecrypt = Callable[[str, bytes], bytes | None]
"""``(sender user id, opus frame) -> plaintext or None`` (failure, already counted by DAVE)."""
TrialDecrypt = Callable[[str, bytes], bytes | None]
"""``(candidate user id, opus frame) -> plaintext or None``: uncounted; None unless the frame is a
DAVE frame this user's key opens (so in a call without DAVE nothing is bound by trial)."""


@attrs.frozen
class AudioPacket:
    """One Opus packet from ``user_id``, ready to decode.

    ``lost_before`` frames are missing right before it (conceal them first); ``discontinuity``
    means the gap was too large to conceal: reset the decoder state instead.
    """

    user_id: str
    ssrc: int
    sequence: int
    timestamp: int
    opus: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    lost_before: int = 0
    discontinuity: bool = False


@attrs.frozen
class SpeakingStarted:
    user_id: str
    ssrc: int


@attrs.frozen
class SpeakingStopped:
    user_id: str
    ssrc: int
    reason: str
    """``silence_frames``, ``timeout`` or ``disconnected``."""


Event = AudioPacket | SpeakingStarted | SpeakingStopped


@attrs.frozen
class UserAudioStatistics:
    user_id: str
    ssrc: int
    packets: int
    lost: int
    duplicates: int
    stale: int
    decrypt_failures: int
    silence_frames: int
    speaking: bool


@attrs.frozen
class EarlyAudioStatistics:
    """Audio that arrived before we knew its sender (no op5 yet)."""

    held: int
    """Packets held for an unannounced SSRC."""
    delivered: int
    """Held packets delivered once the SSRC was bound (by op5 or by a trial decrypt)."""
    expired: int
    """Held packets dropped: older than ``EARLY_AUDIO_S`` or over a bound."""
    bound_by_trial: int
    """SSRCs bound to a user because that user's DAVE key opened their audio."""
    trials: int
    """Trial decrypts attempted."""


@attrs.frozen
class AudioReceiveStatistics:
    packets: int
    delivered: int
    drops: Mapping[str, int]
    users: tuple[UserAudioStatistics, ...]
    early: EarlyAudioStatistics = EarlyAudioStatistics(0, 0, 0, 0, 0)


class _Stream:
    """Per-SSRC receive state."""

    __slots__ = (
        "decrypt_failures",
        "duplicates",
        "highest",
        "last_packet_at",
        "lost",
        "packets",
        "seen",
        "silence_frames",
        "silence_run",
        "speaking",
        "ssrc",
        "stale",
        "user_id",
    )

    def __init__(self, ssrc: int, user_id: str) -> None:
        self.ssrc = ssrc
        self.user_id = user_id
        self.highest: int | None = None  # extended sequence number
        self.seen = 0  # bitmap: bit i = highest - i was received
        self.speaking = False
        self.silence_run = 0
        self.last_packet_at = 0.0
        self.packets = 0
        self.lost = 0
        self.duplicates = 0
        self.stale = 0
        self.decrypt_failures = 0
        self.silence_frames = 0

    def freeze(self) -> UserAudioStatistics:
        return UserAudioStatistics(
            user_id=self.user_id,
            ssrc=self.ssrc,
            packets=self.packets,
            lost=self.lost,
            duplicates=self.duplicates,
            stale=self.stale,
            decrypt_failures=self.decrypt_failures,
            silence_frames=self.silence_frames,
            speaking=self.speaking,
        )


class _Early:
    """Packets of one unannounced SSRC: ``(arrived, sequence, timestamp, payload)``."""

    __slots__ = ("packets", "trials")

    def __init__(self) -> None:
        self.packets: deque[tuple[float, int, int, bytes]] = deque()
        self.trials = 0


class AudioReceiveCore:
    """Receive-side audio bookkeeping for one voice leg. Not thread-safe."""

    def __init__(
        self,
        self_user_id: str,
        *,
        decrypt: DaveDecrypt | None = None,
        trial: TrialDecrypt | None = None,
        silence_timeout: float = DEFAULT_SILENCE_TIMEOUT,
    ) -> None:
        self.self_user_id = self_user_id
        self._decrypt = decrypt
        self._trial = trial
        self.silence_timeout = silence_timeout
        self._users: dict[int, str] = {}  # ssrc -> user id
        self._streams: dict[int, _Stream] = {}
        self._members: dict[str, None] = {}  # users we know are in the call (insertion order)
        self._early: dict[int, _Early] = {}  # unannounced ssrc -> held packets (LRU order)
        self._drops = dict.fromkeys(DROP_REASONS, 0)
        self._packets = 0
        self._delivered = 0
        self._early_held = 0
        self._early_delivered = 0
        self._early_expired = 0
        self._bound_by_trial = 0
        self._trials = 0

    # ------------------------------------------------------------------ SSRC map

    def bind(self, ssrc: int, user_id: str) -> list[Event]:
        """op5 (or op12 ``audio_ssrc``): ``ssrc`` carries ``user_id``'s audio.

        Audio already held for ``ssrc`` (it arrived before this op5) is delivered now.
        """
        if not ssrc or user_id == self.self_user_id:
            return []
        self.members_connected((user_id,))
        events: list[Event] = []
        for old_ssrc, old_user in list(self._users.items()):
            if old_user == user_id and old_ssrc != ssrc:
                events += self._drop_stream(old_ssrc, "disconnected")
        previous = self._users.get(ssrc)
        if previous is not None and previous != user_id:
            events += self._drop_stream(ssrc, "disconnected")
        self._users[ssrc] = user_id
        early = self._early.pop(ssrc, None)
        if early is not None:
            for _at, sequence, timestamp, payload in early.packets:
                self._early_delivered += 1
                events += self._accept(ssrc, user_id, sequence, timestamp, payload, _at, None)
        return events

    def members_connected(self, user_ids: Iterable[str]) -> None:
        """op11 / op12 / op5 users: who may own an SSRC nobody announced yet."""
        for user_id in user_ids:
            if user_id != self.self_user_id:
                self._members[user_id] = None

    def client_disconnected(self, user_id: str) -> list[Event]:
        """op13: forget every SSRC of ``user_id``."""
        self._members.pop(user_id, None)
        events: list[Event] = []
        for ssrc, owner in list(self._users.items()):
            if owner == user_id:
                events += self._drop_stream(ssrc, "disconnected")
        return events

    def user_for_ssrc(self, ssrc: int) -> str | None:
        return self._users.get(ssrc)

    def ssrc_map(self) -> Mapping[int, str]:
        return dict(self._users)

    # ------------------------------------------------------------------ packets

    def receive(self, ssrc: int, sequence: int, timestamp: int, payload: bytes, now: float) -> list[Event]:
        """One transport-decrypted Opus RTP payload (padding and extension already stripped)."""
        self._packets += 1
        user_id = self._users.get(ssrc)
        if user_id is None:
            self._drops["unknown_ssrc"] += 1
            return self._hold(ssrc, sequence, timestamp, payload, now)
        return self._accept(ssrc, user_id, sequence, timestamp, payload, now, None)

    def _accept(
        self,
        ssrc: int,
        user_id: str,
        sequence: int,
        timestamp: int,
        payload: bytes,
        now: float,
        plain: bytes | None,
    ) -> list[Event]:
        """A packet of a bound SSRC (``plain``: its DAVE plaintext when a trial already opened it)."""
        if not payload:
            self._drops["empty"] += 1
            return []
        stream = self._streams.get(ssrc)
        if stream is None:
            stream = self._streams[ssrc] = _Stream(ssrc, user_id)
        lost = self._track_sequence(stream, sequence)
        if lost is None:
            return []
        stream.packets += 1
        stream.last_packet_at = now
        opus = payload
        if plain is not None:
            opus = plain
        elif self._decrypt is not None and payload != OPUS_SILENCE:  # davey passes silence through
            opened = self._decrypt(user_id, payload)
            if opened is None:
                stream.silence_run = 0
                stream.decrypt_failures += 1
                self._drops["dave_decrypt"] += 1
                return []
            opus = opened
        if opus == OPUS_SILENCE:  # sent in clear, or DAVE-encrypted by the sender
            stream.silence_frames += 1
            stream.silence_run += 1
            if stream.speaking and stream.silence_run >= SILENCE_FRAMES_TO_STOP:
                stream.speaking = False
                return [SpeakingStopped(user_id, ssrc, "silence_frames")]
            return []
        stream.silence_run = 0
        events: list[Event] = []
        if not stream.speaking:
            stream.speaking = True
            events.append(SpeakingStarted(user_id, ssrc))
        discontinuity = lost > MAX_CONCEALED_FRAMES
        self._delivered += 1
        events.append(
            AudioPacket(
                user_id=user_id,
                ssrc=ssrc,
                sequence=sequence,
                timestamp=timestamp,
                opus=opus,
                lost_before=0 if discontinuity else lost,
                discontinuity=discontinuity,
            )
        )
        return events

    # ------------------------------------------------------------------ audio before op5

    def _hold(self, ssrc: int, sequence: int, timestamp: int, payload: bytes, now: float) -> list[Event]:
        early = self._early.pop(ssrc, None)
        if early is None:
            early = _Early()
            while len(self._early) >= EARLY_AUDIO_SSRCS:
                oldest = next(iter(self._early))
                self._early_expired += len(self._early.pop(oldest).packets)
        self._early[ssrc] = early  # most recently heard last
        packets = early.packets
        packets.append((now, sequence, timestamp, payload))
        self._early_held += 1
        while packets and (len(packets) > EARLY_AUDIO_PACKETS or now - packets[0][0] > EARLY_AUDIO_S):
            packets.popleft()
            self._early_expired += 1
        if self._trial is None or payload == OPUS_SILENCE or early.trials >= EARLY_TRIAL_PACKETS:
            return []
        early.trials += 1
        bound = set(self._users.values())
        candidates = sorted(self._members, key=lambda u: u in bound)  # unbound members first
        for user_id in candidates:
            self._trials += 1
            plain = self._trial(user_id, payload)
            if plain is None:
                continue
            self._bound_by_trial += 1
            packets.pop()  # this packet: delivered with the plaintext the trial produced
            self._early_delivered += 1
            events = self.bind(ssrc, user_id)
            return events + self._accept(ssrc, user_id, sequence, timestamp, payload, now, plain)
        return []

    def _track_sequence(self, stream: _Stream, sequence: int) -> int | None:
        """Frames lost right before this packet, or None when it must be dropped."""
        highest = stream.highest
        if highest is None:
            stream.highest = sequence
            stream.seen = 1
            return 0
        delta = (sequence - highest) & 0xFFFF
        if delta == 0:
            stream.duplicates += 1
            self._drops["duplicate"] += 1
            return None
        if delta < 0x8000:  # ahead of the highest (mod 2^16)
            stream.highest = highest + delta
            stream.seen = ((stream.seen << delta) | 1) & ((1 << SEQUENCE_WINDOW) - 1)
            lost = delta - 1
            stream.lost += lost
            return lost
        behind = 0x10000 - delta
        if behind < SEQUENCE_WINDOW and stream.seen >> behind & 1:
            stream.duplicates += 1
            self._drops["duplicate"] += 1
            return None
        # Late: its slot was already concealed and played out.
        stream.stale += 1
        self._drops["stale"] += 1
        return None

    # ------------------------------------------------------------------ time

    def next_deadline(self) -> float | None:
        times = [s.last_packet_at + self.silence_timeout for s in self._streams.values() if s.speaking]
        return min(times) if times else None

    def tick(self, now: float) -> list[Event]:
        """Speakers that went quiet without (received) silence frames; held early audio expires."""
        for ssrc, early in list(self._early.items()):
            packets = early.packets
            while packets and now - packets[0][0] > EARLY_AUDIO_S:
                packets.popleft()
                self._early_expired += 1
            if not packets and early.trials >= EARLY_TRIAL_PACKETS:
                del self._early[ssrc]
        events: list[Event] = []
        for stream in self._streams.values():
            if stream.speaking and now - stream.last_packet_at >= self.silence_timeout:
                stream.speaking = False
                stream.silence_run = 0
                events.append(SpeakingStopped(stream.user_id, stream.ssrc, "timeout"))
        return events

    # ------------------------------------------------------------------ statistics

    def statistics(self) -> AudioReceiveStatistics:
        return AudioReceiveStatistics(
            packets=self._packets,
            delivered=self._delivered,
            drops=dict(self._drops),
            users=tuple(s.freeze() for s in self._streams.values()),
            early=EarlyAudioStatistics(
                held=self._early_held,
                delivered=self._early_delivered,
                expired=self._early_expired,
                bound_by_trial=self._bound_by_trial,
                trials=self._trials,
            ),
        )

    def _drop_stream(self, ssrc: int, reason: str) -> list[Event]:
        self._users.pop(ssrc, None)
        stream = self._streams.pop(ssrc, None)
        if stream is not None and stream.speaking:
            return [SpeakingStopped(stream.user_id, ssrc, reason)]
        return []
