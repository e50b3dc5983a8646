"""DAVE cost per frame (encrypt + decrypt) next to the plain path. Bounded: a few seconds.

Run: .venv/bin/python bench/bench_dave.py
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "dave"))

from dave_net import DaveNet

from clank.crypto.dave import DaveSessionCore, Media

BUDGET_S = 0.6  # per measurement


def _per_call_us(fn: Callable[[], object]) -> float:
    n = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < BUDGET_S:
        for _ in range(50):
            fn()
        n += 50
    return elapsed / n * 1e6


def _h264_au(size: int) -> bytes:
    sps = b"\x00\x00\x00\x01\x67\x42\xc0\x1e\xda\x02\x80\xbf\xe5\x84"
    pps = b"\x00\x00\x00\x01\x68\xce\x3c\x80"
    body = bytes((i * 7 + 1) % 255 + 1 for i in range(size - len(sps) - len(pps) - 7))
    return sps + pps + b"\x00\x00\x00\x01\x65\x88\x84" + body


def main() -> None:
    net = DaveNet(0)
    alice, bob = DaveSessionCore(1, net.group_id), DaveSessionCore(2, net.group_id)
    net.join(alice)
    net.join(bob)
    net.settle()
    aes = AESGCM(os.urandom(32))
    nonce = bytes(12)
    cases: list[tuple[str, bytes, Callable[[bytes], bytes], Media]] = [
        ("opus 120 B", os.urandom(120), lambda f: alice.encrypt_opus(f), "audio"),
        ("h264 60 KB", _h264_au(60_000), lambda f: alice.encrypt_video("h264", f), "video"),
    ]
    print(f"{'frame':<12} {'dave enc+dec µs':>16} {'copy µs':>9} {'aes-gcm µs':>11} {'dave/aes':>9}")
    for name, frame, encrypt, media in cases:

        def dave_round_trip(
            frame: bytes = frame, encrypt: Callable[[bytes], bytes] = encrypt, media: Media = media
        ) -> None:
            bob.decrypt(1, media, encrypt(frame))

        def plain_copy(frame: bytes = frame) -> None:
            bytes(bytearray(frame))

        def aes_round_trip(frame: bytes = frame) -> None:
            aes.decrypt(nonce, aes.encrypt(nonce, frame, None), None)

        dave_us = _per_call_us(dave_round_trip)
        copy_us = _per_call_us(plain_copy)
        aes_us = _per_call_us(aes_round_trip)
        print(f"{name:<12} {dave_us:>16.1f} {copy_us:>9.2f} {aes_us:>11.1f} {dave_us / aes_us:>9.1f}x")
    stats = bob.statistics()
    assert stats.decrypt_failures == {}, stats.decrypt_failures


if __name__ == "__main__":
    main()
