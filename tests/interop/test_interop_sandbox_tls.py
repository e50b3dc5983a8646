"""The sandbox's throwaway TLS: a client trusting ``ca_file`` verifies it; nobody else does."""

from __future__ import annotations

import json
import ssl
from functools import partial

import pytest
import trio
import trio_websocket
from cryptography import x509

from clank.sandbox.rtc.server import MediaServerConfig, open_media_server
from clank.sandbox.tls import open_sandbox_tls


async def _echo(request: trio_websocket.WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        await ws.send_message(await ws.get_message())
    except trio_websocket.ConnectionClosed:
        return


async def _round_trip(host: str, port: int, context: ssl.SSLContext) -> str | bytes:
    async with trio_websocket.open_websocket(host, port, "/?v=8", use_ssl=context) as ws:
        await ws.send_message("hello")
        return await ws.get_message()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_wss_with_sandbox_ca_verifies_hostname_and_chain(host: str) -> None:
    with trio.fail_after(10), open_sandbox_tls() as tls:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(trio_websocket.serve_websocket, ssl_context=tls.server_context()),
                _echo,
                "127.0.0.1",
                0,
            )
            assert await _round_trip(host, server.port, tls.client_context()) == "hello"
            nursery.cancel_scope.cancel()


async def test_a_client_without_the_sandbox_ca_refuses_the_certificate() -> None:
    with trio.fail_after(10), open_sandbox_tls() as tls:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(trio_websocket.serve_websocket, ssl_context=tls.server_context()),
                _echo,
                "127.0.0.1",
                0,
            )
            # A verifying context without our CA (the CA of another, unrelated sandbox). Plain TLS:
            # trio-websocket's client waits for its handshake event after a failed TLS handshake.
            with open_sandbox_tls() as other:
                stream = await trio.open_ssl_over_tcp_stream(
                    "127.0.0.1", server.port, ssl_context=other.client_context()
                )
                with pytest.raises(trio.BrokenResourceError) as caught:
                    await stream.do_handshake()
                await trio.aclose_forcefully(stream)
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
            nursery.cancel_scope.cancel()


def test_files_exist_only_while_open_and_name_the_hosts() -> None:
    with open_sandbox_tls(("127.0.0.1", "localhost")) as tls:
        cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        ca = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert tls.key_file.stat().st_mode & 0o077 == 0
        paths = (tls.ca_file, tls.cert_file, tls.key_file)
    assert not any(path.exists() for path in paths)


async def test_a_tls_voice_server_survives_a_failed_handshake_and_greets_the_next_client() -> None:
    with trio.fail_after(15), open_sandbox_tls() as tls, open_sandbox_tls() as other:
        config = MediaServerConfig(ssl_context=tls.server_context())
        async with open_media_server("voice", "111", 222000000000000001, config) as server:
            host, _, port = server.endpoint.rpartition(":")
            # A client that does not trust the certificate gives up mid-handshake ...
            stream = await trio.open_ssl_over_tcp_stream(host, int(port), ssl_context=other.client_context())
            with pytest.raises(trio.BrokenResourceError):
                await stream.do_handshake()
            await trio.aclose_forcefully(stream)
            # ... and one speaks plain ws:// to the wss:// server; neither takes the server down.
            plain = await trio.open_tcp_stream(host, int(port))
            await plain.send_all(b"GET /?v=8 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
            async with trio_websocket.open_websocket(
                host, int(port), "/?v=8", use_ssl=tls.client_context()
            ) as ws:
                hello = json.loads(await ws.get_message())
            await plain.aclose()
            assert hello["op"] == 8  # Hello
