"""The API answers only Host names it serves (DNS-rebinding defence), over real loopback sockets."""

from __future__ import annotations

import httpx
import pytest
import trio
from control_fakes import ALICE, RegistrySession

from clank.config import ApiSettings
from clank.control.host_check import AllowedHosts, host_name
from clank.control.http import open_http_api
from clank.control.service import ClankService

LIMIT = 15
TOKEN = "test-token-0123456789abcdef"
PATHS = [("GET", "/"), ("GET", "/api/status"), ("POST", "/api/tools/list_sharers"), ("POST", "/mcp")]


@pytest.mark.parametrize(
    ("header", "name"),
    [("localhost:8787", "localhost"), ("[::1]:8787", "::1"), ("::1", "::1"), ("Example.COM.", "example.com"),
     ("127.0.0.1", "127.0.0.1"), ("", "")],
)  # fmt: skip
def test_host_name_strips_port_case_and_dot(header: str, name: str) -> None:
    assert host_name(header) == name


def test_allowed_names() -> None:
    allowed = AllowedHosts.from_setting("0.0.0.0", " clank.lan , box.tailnet.ts.net")
    for ok in ("localhost:1", "app.localhost", "127.0.0.1:8787", "127.9.9.9", "[::1]:80", "192.168.1.5:8787",
               "clank.lan:8787", "BOX.tailnet.ts.net"):  # fmt: skip
        assert allowed.allows(ok), ok
    for bad in (
        "evil.example",
        "evil.example:8787",
        "localhost.evil.example",
        "clank.lan.evil",
        "",
        "0.0.0.0x",
    ):
        assert not allowed.allows(bad), bad
    assert AllowedHosts("my-box").allows("my-box:8787")
    assert not AllowedHosts("127.0.0.1").allows("my-box")


async def test_a_foreign_host_gets_421_on_every_route_before_auth() -> None:
    session = RegistrySession()
    session.join(ALICE, stream=True)
    settings = ApiSettings(port=0, allowed_hosts="clank.lan")
    with trio.fail_after(LIMIT):
        async with (
            open_http_api(ClankService(session), settings, token=TOKEN) as api,
            httpx.AsyncClient(base_url=api.url, timeout=5) as client,
        ):
            auth = {"Authorization": f"Bearer {TOKEN}"}
            for method, path in PATHS:
                for host in ("evil.example", f"evil.example:{api.port}", "localhost.evil.example"):
                    response = await client.request(method, path, headers={**auth, "Host": host})
                    assert response.status_code == 421, (path, host, response.status_code)
                    assert response.json()["error"] == "host_not_allowed"
                    assert "evil.example" in response.json()["message"]
            # Names it serves: loopback, the configured one; the routes then answer as usual.
            for host in (f"127.0.0.1:{api.port}", f"localhost:{api.port}", f"clank.lan:{api.port}"):
                assert (await client.get("/api/status", headers={**auth, "Host": host})).status_code == 200
                assert (await client.get("/api/status", headers={"Host": host})).status_code == 401
                assert (await client.get("/", headers={"Host": host})).status_code == 200
