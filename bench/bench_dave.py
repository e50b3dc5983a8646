"""DAVE cost per frame (encrypt + decrypt) next to the plain path. Bounded: a few seconds.

Run: .venv/bin/python bench/bench_dave.py

Part 2 is the decrypt throughput of davey against the same cipher in ``cryptography``: DAVE
media frames are AES-128-GCM with an 8-byte truncated tag (nonce = the frame's ULEB128 counter,
key from the MLS-exported per-sender hash ratchet). davey 0.1.7 runs its own RustCrypto
AES-GCM at ~170 MB/s on these machines (software speed, with or without a codec transform: the
Opus and H264 paths cost the same per byte), ~20x slower than OpenSSL's AES-NI path. Decrypting
with ``cryptography`` ourselves needs the per-sender key, and davey's Python API exposes neither
the MLS exporter secret nor the ratchet (no ``export_secret`` / key getter), so that path is
blocked upstream; the figure here says what it would save.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "dave"))

from dave_net import DaveNet

from clank.crypto.dave import DaveSessionCore
from clank.crypto.dave_stats import Media

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
    decrypt_throughput(alice, bob)
    stats = bob.statistics()
    assert stats.decrypt_failures == {}, stats.decrypt_failures


def _truncated_gcm_open(key: bytes, nonce: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.GCM(nonce, tag, min_tag_length=8)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def decrypt_throughput(alice: DaveSessionCore, bob: DaveSessionCore) -> None:
    print("decrypt only, MB/s of frame (CPU time):")
    print(f"{'frame':<12} {'davey':>8} {'AES-128-GCM/8 (cryptography)':>30} {'ratio':>7}")
    key, nonce = os.urandom(16), bytes(8) + (1).to_bytes(4, "little")
    for size in (10_000, 60_000, 200_000):
        frames = [alice.encrypt_video("h264", _h264_au(size)) for _ in range(30)]
        started = time.process_time()
        for frame in frames:
            bob.decrypt(1, "video", frame)
        davey_mbps = size * len(frames) / (time.process_time() - started) / 1e6
        encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        ciphertext = encryptor.update(_h264_au(size)) + encryptor.finalize()
        tag = encryptor.tag[:8]
        runs = 0
        started = time.process_time()
        while (elapsed := time.process_time() - started) < 0.2:
            _truncated_gcm_open(key, nonce, ciphertext, tag)
            runs += 1
        aes_mbps = size * runs / elapsed / 1e6
        print(
            f"{size // 1000:>4} KB h264 {davey_mbps:>8.0f} {aes_mbps:>30.0f} {aes_mbps / davey_mbps:>6.0f}x"
        )


if __name__ == "__main__":
    main()
