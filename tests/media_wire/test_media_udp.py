"""The trio UDP driver over real loopback sockets."""

from __future__ import annotations

import functools
import time

import trio
import trio.testing

from clank.crypto.transport import AES256_GCM_RTPSIZE, TransportCipher
from clank.io.udp import (
    DEFAULT_RCVBUF,
    DRAIN_BUDGET,
    DRAIN_CLOCK_EVERY,
    Address,
    UdpEndpoint,
    discover_ip,
    open_udp_endpoint,
)
from clank.wire import ip_discovery
from clank.wire.ip_discovery import DiscoveryRequest
from clank.wire.rtp import PacketKind, RtpHeader, classify

KEY = bytes(range(32))


async def test_rcvbuf_is_raised() -> None:
    with trio.fail_after(5):
        async with open_udp_endpoint() as endpoint:
            # Linux reports twice the requested size; anything below the request means it was capped.
            assert endpoint.statistics().rcvbuf >= DEFAULT_RCVBUF
            assert endpoint.local_address[0] == "127.0.0.1"


async def test_drain_loop_receives_a_burst_inline() -> None:
    count = 2000
    burst = 200
    received: list[bytes] = []
    drained = {n: trio.Event() for n in range(burst, count + 1, burst)}  # by datagrams received

    with trio.fail_after(10):
        async with open_udp_endpoint() as receiver:
            async with open_udp_endpoint(receiver.local_address) as sender:

                def handler(data: bytes, address: Address) -> None:
                    assert address == sender.local_address
                    received.append(data)
                    if len(received) in drained:
                        drained[len(received)].set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receiver.drain_loop, handler)
                    for i in range(count):
                        assert sender.send_nowait(i.to_bytes(4, "big") + bytes(1096))
                        if i % burst == burst - 1:
                            # Bursts of 200 (~0.5 MB of kernel buffer) and wait for each to drain:
                            # a busy machine can starve the drain task, and 2,000 unread datagrams
                            # would overflow the 4 MB receive buffer and lose packets by design.
                            await drained[i + 1].wait()
                    nursery.cancel_scope.cancel()
                stats = receiver.statistics()
                assert stats.packets_received == count
                assert stats.bytes_received == count * 1100
                assert 1 <= stats.drain_batches < count  # batches, not one wakeup per packet
                assert sender.statistics().packets_sent == count
    assert [int.from_bytes(p[:4], "big") for p in received] == list(range(count))


async def test_a_connected_endpoint_drains_its_remote_only_and_names_it() -> None:
    """A connected endpoint reads with ``recv``: the handler still gets the remote's address,
    and datagrams from anyone else never reach it (the kernel filters them)."""
    received: list[tuple[bytes, Address]] = []
    two_in = trio.Event()

    def handler(data: bytes, address: Address) -> None:
        received.append((data, address))
        if len(received) == 2:
            two_in.set()

    with trio.fail_after(10):
        async with open_udp_endpoint() as peer, open_udp_endpoint() as stranger:
            remote = peer.local_address
            async with open_udp_endpoint(remote) as receiver, trio.open_nursery() as nursery:
                nursery.start_soon(receiver.drain_loop, handler)
                assert stranger.send_nowait(b"stranger", receiver.local_address)
                assert peer.send_nowait(b"one", receiver.local_address)
                assert peer.send_nowait(b"two", receiver.local_address)
                await two_in.wait()
                await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
    assert received == [(b"one", remote), (b"two", remote)]


async def test_a_slow_burst_yields_to_other_tasks_on_the_time_budget() -> None:
    """Handlers costing 0.2 ms each: a drain stops after ~DRAIN_BUDGET and other tasks run between."""
    count = 60
    per_packet = 0.0002
    handled: list[float] = []
    ticks: list[float] = []
    all_in = trio.Event()

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        async with open_udp_endpoint() as receiver, open_udp_endpoint(receiver.local_address) as sender:

            def handler(data: bytes, address: Address) -> None:
                end = time.thread_time() + per_packet  # CPU, so preemption does not shorten it
                while time.thread_time() < end:
                    pass
                handled.append(time.perf_counter())
                if len(handled) == count:
                    all_in.set()

            for _ in range(count):  # queued before the drain starts: one readable wake-up
                assert sender.send_nowait(bytes(200))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ticker)
                nursery.start_soon(receiver.drain_loop, handler)
                await all_in.wait()
                nursery.cancel_scope.cancel()
            stats = receiver.statistics()
    # 60 x 0.2 ms = 12 ms of handler work in 0.5 ms slices: many drains, each cut by the budget.
    assert stats.budget_yields >= count * per_packet / (DRAIN_BUDGET + 4 * per_packet) - 1, stats
    # Between two runs of another task, at most budget / cost + one clock interval of datagrams.
    runs = [0]
    previous = handled[0]
    for t in handled[1:]:
        if any(previous < tick < t for tick in ticks):
            runs.append(0)
        runs[-1] += 1
        previous = t
    assert max(runs) <= DRAIN_BUDGET / per_packet + DRAIN_CLOCK_EVERY + 1, runs


async def test_encrypted_rtp_over_loopback() -> None:
    sealer = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
    opener = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
    payloads: list[tuple[int, bytes]] = []
    done = trio.Event()

    def handler(data: bytes, address: Address) -> None:
        assert classify(data) is PacketKind.RTP
        header, payload = opener.open_rtp(data)
        payloads.append((header.sequence, payload))
        if len(payloads) == 50:
            done.set()

    with trio.fail_after(10):
        async with open_udp_endpoint() as receiver, open_udp_endpoint(receiver.local_address) as sender:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receiver.drain_loop, handler)
                for seq in range(50):
                    header = RtpHeader(120, seq, seq * 960, 12873).serialize()
                    await sender.send(sealer.seal_rtp(header, b"opus%d" % seq))
                await done.wait()
                nursery.cancel_scope.cancel()
    assert payloads == [(seq, b"opus%d" % seq) for seq in range(50)]


async def _discovery_server(
    server: UdpEndpoint, *, ignore_first: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    task_status.started()
    seen = 0
    while True:
        data, address = await server.receive()
        request = DiscoveryRequest.parse(data)
        seen += 1
        if seen <= ignore_first:
            continue  # simulate a lost datagram
        await server.sendto(b"\x80\x78" + bytes(20), address)  # unrelated media first
        await server.sendto(ip_discovery.build_response(request.ssrc, address[0], address[1]), address)


async def test_discover_ip_against_a_loopback_server() -> None:
    with trio.fail_after(5):
        async with open_udp_endpoint() as server, trio.open_nursery() as nursery:
            await nursery.start(functools.partial(_discovery_server, server, ignore_first=0))
            async with open_udp_endpoint(server.local_address) as client:
                assert await discover_ip(client, 12873) == client.local_address
            nursery.cancel_scope.cancel()


async def test_discover_ip_resends_after_a_lost_request(autojump_clock: trio.testing.MockClock) -> None:
    autojump_clock.autojump_threshold = 0.005
    with trio.fail_after(5):
        async with open_udp_endpoint() as server, trio.open_nursery() as nursery:
            await nursery.start(functools.partial(_discovery_server, server, ignore_first=1))
            async with open_udp_endpoint(server.local_address) as client:
                assert await discover_ip(client, 7) == client.local_address
                assert client.statistics().packets_sent >= 2
            nursery.cancel_scope.cancel()


async def test_icmp_refusal_is_counted_not_raised() -> None:
    with trio.fail_after(5):
        async with open_udp_endpoint() as gone:
            dead_address = gone.local_address
        async with open_udp_endpoint(dead_address) as endpoint:
            for _ in range(5):
                endpoint.send_nowait(b"hello?")
                await trio.sleep(0.01)
            stats = endpoint.statistics()
            # Linux reports the ICMP error on the next send on a connected socket.
            assert stats.send_dropped + stats.packets_sent == 5
            assert stats.send_dropped >= 1
