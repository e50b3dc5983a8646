"""Voice UDP keep-alive: 8 bytes, a little-endian u32 counter then four zero bytes.

Sans-io. Discord stops delivering media to a UDP client that sends nothing (a listen-only leg
sends no RTP and no RTCP), so every leg sends one of these every 5 s from Ready until it closes.
The layout and interval are the ones discord.js voice uses (``VoiceUDPSocket``: an 8-byte buffer,
``writeUInt32LE(counter, 0)``, ``KEEP_ALIVE_INTERVAL = 5e3``, counter wrapping at 2**32; their
PR #9202); discord-ext-voice-recv and pycord added the same after "receive stops after ~15 min".
The server sends nothing back; receivers drop these before RTP/RTCP parsing.

Layout::

    off  size  field
    0    4     counter (u32, little-endian, +1 per keep-alive, wraps)
    4    4     zero
"""

from __future__ import annotations

import struct
from typing import Final

from clank.errors import MalformedPacket

__all__ = ["KEEPALIVE_INTERVAL", "KEEPALIVE_SIZE", "build_keepalive", "parse_keepalive"]

_KEEPALIVE = struct.Struct("<I4x")
KEEPALIVE_SIZE: Final = _KEEPALIVE.size  # 8
KEEPALIVE_INTERVAL: Final = 5.0
"""Seconds between keep-alives (discord.js)."""


def build_keepalive(counter: int) -> bytes:
    return _KEEPALIVE.pack(counter & 0xFFFFFFFF)


def parse_keepalive(buf: bytes) -> int:
    """The counter of one keep-alive datagram."""
    if len(buf) != KEEPALIVE_SIZE:
        raise MalformedPacket("udp_keepalive", f"expected {KEEPALIVE_SIZE} bytes, got {len(buf)}")
    (counter,) = _KEEPALIVE.unpack(buf)
    return int(counter)
