"""Where the main gateway is: ``discord.gateway_url``, else ``GET /gateway`` on the REST API."""

from __future__ import annotations

from typing import Final

import httpx

from clank.config import Settings
from clank.errors import AuthenticationFailed, TransportError

DISCOVERY_TIMEOUT: Final = 10.0


async def discover_gateway_url(settings: Settings) -> str:
    """``discord.gateway_url``, else ask ``GET /gateway`` (user tokens: not /gateway/bot)."""
    if settings.discord.gateway_url:
        return settings.discord.gateway_url
    url = settings.discord.api_url.rstrip("/") + "/v10/gateway"
    try:
        async with httpx.AsyncClient(timeout=DISCOVERY_TIMEOUT) as client:
            response = await client.get(url, headers={"Authorization": settings.discord.token})
    except httpx.HTTPError as exc:
        raise TransportError(f"could not reach {settings.discord.api_url}: {type(exc).__name__}") from exc
    if response.status_code == 401:
        raise AuthenticationFailed("the Discord token was refused (HTTP 401)")
    if response.status_code != 200:
        raise TransportError(f"GET {url} answered HTTP {response.status_code}")
    try:
        found = response.json()["url"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TransportError(f"GET {url} gave no gateway url") from exc
    if not isinstance(found, str):
        raise TransportError(f"GET {url} gave no gateway url")
    return found
