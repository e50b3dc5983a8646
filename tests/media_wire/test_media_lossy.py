"""Seeded link impairment and the in-memory datagram pair."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from clank.errors import UsageError
from clank.io.lossy import LossyLink, open_memory_datagram_pair
from clank.io.udp import Address


def test_same_seed_same_fates() -> None:
    def fates(seed: int) -> list[tuple[float, ...]]:
        link = LossyLink(seed, loss=0.2, dup=0.1, reorder=0.1, delay=0.01, jitter=0.005)
        return [link.fate() for _ in range(500)]

    assert fates(1) == fates(1)
    assert fates(1) != fates(2)


def test_rates_are_roughly_respected() -> None:
    link = LossyLink(42, loss=0.25, dup=0.1, reorder=0.05)
    outcomes = [link.fate() for _ in range(20_000)]
    stats = link.statistics()
    assert stats.decided == 20_000
    assert sum(1 for o in outcomes if not o) == stats.dropped
    assert 0.23 < stats.dropped / 20_000 < 0.27
    assert 0.09 < stats.duplicated / (20_000 - stats.dropped) < 0.11
    assert sum(1 for o in outcomes if len(o) == 2) == stats.duplicated


def test_perfect_link_delivers_once_immediately() -> None:
    link = LossyLink(0)
    assert all(link.fate() == (0.0,) for _ in range(100))


@pytest.mark.parametrize("kwargs", [{"loss": 1.5}, {"dup": -0.1}, {"delay": -1.0}])
def test_bad_parameters_are_usage_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        LossyLink(0, **kwargs)


async def test_memory_pair_applies_delay_and_reorder(autojump_clock: trio.testing.MockClock) -> None:
    got: list[tuple[float, int]] = []
    link = LossyLink(7, reorder=0.2, delay=0.05, jitter=0.0, reorder_delay=0.03)
    with trio.fail_after(30):
        async with open_memory_datagram_pair(a_to_b=link) as (a, b), trio.open_nursery() as nursery:

            def handler(data: bytes, source: Address) -> None:
                assert source == a.local_address
                got.append((trio.current_time(), int.from_bytes(data, "big")))

            nursery.start_soon(b.drain_loop, handler)
            start = trio.current_time()
            for i in range(200):
                await a.send(i.to_bytes(2, "big"))
                await trio.sleep(0.01)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    order = [seq for _, seq in got]
    assert sorted(order) == list(range(200))  # nothing lost or duplicated
    assert order != list(range(200))  # but some overtaken
    assert link.statistics().reordered > 0
    assert min(t for t, _ in got) >= start + 0.05


async def test_memory_pair_loss_and_dup_counts_match(autojump_clock: trio.testing.MockClock) -> None:
    link = LossyLink(3, loss=0.1, dup=0.1)
    received: list[int] = []
    with trio.fail_after(30):
        async with open_memory_datagram_pair(a_to_b=link) as (a, b), trio.open_nursery() as nursery:
            nursery.start_soon(b.drain_loop, lambda data, _src: received.append(data[0]))
            for i in range(250):
                a.send_nowait(bytes([i]))
            await trio.sleep(0.1)
            # and the reverse direction is a perfect link
            await b.send(b"back")
            assert await a.receive() == (b"back", b.local_address)
            nursery.cancel_scope.cancel()
    stats = link.statistics()
    assert len(received) == 250 - stats.dropped + stats.duplicated
    assert b.statistics().packets_received == len(received)
