"""The Host-header check in front of the API, the dashboard and /mcp (DNS-rebinding defence).

A page on ``http://evil.example`` can make its own name resolve to 127.0.0.1 and then talk to a
loopback service as same-origin. The browser still sends ``Host: evil.example``, so the API
answers only requests whose Host names it:

* loopback names: ``localhost``, ``*.localhost``, ``127.0.0.0/8``, ``::1``;
* any IP literal (a page can only reach an IP literal under that literal's own origin, which
  no rebinding can forge);
* ``api.host`` itself when it is a name, and the names in ``api.allowed_hosts``.

Anything else gets 421 with a JSON error before any route (or the bearer check) runs; a request
without a Host header gets 400. The share-link listener keeps its own list.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any, Final

from clank.logging import get_logger

log = get_logger("clank.control.host_check")

LOOPBACK_NAMES: Final = frozenset({"localhost"})
_WILDCARD_BINDS: Final = frozenset({"", "0.0.0.0", "::"})


def host_name(header: str) -> str:
    """The host part of a Host header value, lower-case, without port or trailing dot."""
    value = header.strip().lower()
    if value.startswith("["):  # [v6]:port
        end = value.find("]")
        name = value[1:end] if end > 0 else value
    elif value.count(":") == 1:
        name = value.rsplit(":", 1)[0]
    else:
        name = value  # a bare name, or an unbracketed IPv6 literal
    return name.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class AllowedHosts:
    """Which Host names the API answers to (see the module docstring)."""

    def __init__(self, bind_host: str, extra: Iterable[str] = ()) -> None:
        names = set(LOOPBACK_NAMES)
        bind = bind_host.strip().lower()
        if bind not in _WILDCARD_BINDS:
            names.add(host_name(bind))
        names.update(host_name(n) for n in extra if n.strip())
        self.names = frozenset(names)

    @classmethod
    def from_setting(cls, bind_host: str, allowed_hosts: str) -> AllowedHosts:
        return cls(bind_host, allowed_hosts.split(","))

    def allows(self, header: str) -> bool:
        name = host_name(header)
        if not name:
            return False
        return name in self.names or name.endswith(".localhost") or _is_ip(name)


class HostCheckMiddleware:
    """ASGI middleware: 421 for a foreign Host, 400 for none; everything else passes through."""

    def __init__(self, app: Any, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
        host = next((v.decode("latin-1") for k, v in headers if k == b"host"), None)
        if host is not None and self.allowed.allows(host):
            await self.app(scope, receive, send)
            return
        if host is None:
            status, error, message = 400, "missing_host", "the request has no Host header"
        else:
            status, error = 421, "host_not_allowed"
            message = f"Host {host_name(host)!r} is not served here (add it to api.allowed_hosts)"
        log.warning("request refused", reason=error, host=host, path=scope.get("path"))
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": error, "message": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
