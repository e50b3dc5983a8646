"""Main gateway wire format: JSON frames ``{"op", "d", "s", "t"}`` and the opcodes.

Sans-io. Both the client (``protocol/gateway.py``) and the sandbox gateway server use this
module, so the two sides cannot drift apart. Optional ``zlib-stream`` transport compression
is handled by :class:`ZlibStreamInflater` (one shared inflate context per connection; a
message is complete when the buffer ends with ``00 00 ff ff``).
"""

from __future__ import annotations

import enum
import json
import zlib
from typing import Any

import attrs

from clank.errors import MalformedMessage

ZLIB_SUFFIX = b"\x00\x00\xff\xff"


class Op(enum.IntEnum):
    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    VOICE_SERVER_PING = 5
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11
    CALL_CONNECT = 13
    STREAM_CREATE = 18
    STREAM_DELETE = 19
    STREAM_WATCH = 20
    STREAM_PING = 21
    STREAM_SET_PAUSED = 22


@attrs.frozen
class GatewayFrame:
    """One gateway message. ``s``/``t`` are only set on dispatches (op 0)."""

    op: int
    d: Any = None
    s: int | None = None
    t: str | None = None

    @classmethod
    def parse(cls, text: str | bytes) -> GatewayFrame:
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedMessage("gateway", f"invalid JSON: {exc}", close_code=4002) from exc
        if not isinstance(obj, dict):
            raise MalformedMessage("gateway", "frame is not an object", close_code=4002)
        op = obj.get("op")
        if not isinstance(op, int) or isinstance(op, bool):
            raise MalformedMessage("gateway", "missing or non-integer 'op'", close_code=4002)
        s = obj.get("s")
        if s is not None and (not isinstance(s, int) or isinstance(s, bool)):
            raise MalformedMessage("gateway", "'s' is not an integer", close_code=4002)
        t = obj.get("t")
        if t is not None and not isinstance(t, str):
            raise MalformedMessage("gateway", "'t' is not a string", close_code=4002)
        if op == Op.DISPATCH and t is None:
            raise MalformedMessage("gateway", "dispatch without 't'", close_code=4002)
        return cls(op=op, d=obj.get("d"), s=s, t=t)

    def serialize(self) -> str:
        return json.dumps({"op": self.op, "d": self.d, "s": self.s, "t": self.t}, separators=(",", ":"))

    @classmethod
    def dispatch(cls, event: str, data: Any, seq: int) -> GatewayFrame:
        return cls(op=Op.DISPATCH, d=data, s=seq, t=event)


class ZlibStreamInflater:
    """Transport-level ``zlib-stream`` decompression; feed every binary frame in order."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj()
        self._buffer = bytearray()

    def feed(self, data: bytes) -> str | None:
        """Return the decoded message once a full one has arrived, else ``None``."""
        self._buffer += data
        if not self._buffer.endswith(ZLIB_SUFFIX):
            return None
        try:
            out = self._inflater.decompress(bytes(self._buffer))
        except zlib.error as exc:
            raise MalformedMessage("gateway", f"zlib-stream: {exc}", close_code=4002) from exc
        finally:
            self._buffer.clear()
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessage("gateway", "zlib-stream payload is not UTF-8", close_code=4002) from exc


class ZlibStreamDeflater:
    """Server side of ``zlib-stream`` (used by the sandbox): one deflate context per connection."""

    def __init__(self) -> None:
        self._deflater = zlib.compressobj()

    def compress(self, text: str) -> bytes:
        return self._deflater.compress(text.encode("utf-8")) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
