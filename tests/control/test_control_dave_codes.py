"""DAVE verification codes: the periodic status never computes them; a request computes one once.

Regression test for the dashboard stall: ``status()`` recomputed every member's code (one scrypt,
~0.27 s with the GIL held, each) on every call. Counted in davey calls, not timed.
"""

from __future__ import annotations

from typing import Any

import attrs
import httpx
import trio

from clank.config import load_settings
from clank.control.dave_codes import VerificationCodes, group_code
from clank.control.session_port import LiveSessionPort
from clank.runner import open_clank

LIMIT = 60


class _Group:
    """Stands in for davey's session: a group state and a code per member (counts its calls)."""

    def __init__(self) -> None:
        self.epoch: int | None = 1
        self.voice_privacy_code: str | None = "111112222233333"
        self.users = frozenset({1, 2, 3})
        self.calls = 0

    def group_user_ids(self) -> frozenset[int]:
        return self.users

    def get_verification_code(self, user_id: int) -> str | None:
        self.calls += 1
        return f"{user_id:05d}{self.epoch:05d}"


async def test_codes_are_computed_once_per_group_state_and_user() -> None:
    group = _Group()
    codes = VerificationCodes()
    assert await codes.code(group, 2) == "0000200001"
    assert await codes.code(group, 2) == "0000200001"
    assert group.calls == 1
    assert codes.cached(group) == {2: "0000200001"}
    assert await codes.code(group, 99) is None  # not in the group: no davey call
    assert group.calls == 1
    group.epoch, group.voice_privacy_code = 2, "444445555566666"  # a transition: codes change
    assert codes.cached(group) == {}
    assert await codes.code(group, 2) == "0000200002"
    assert group.calls == 2


def test_codes_are_shown_in_groups_of_five() -> None:
    assert group_code("123451234512") == "12345 12345 12"


class _CountingDavey:
    """Wraps the voice role's davey session (third-party) to count its costly calls."""

    def __init__(self, port: LiveSessionPort) -> None:
        core = port._voice_dave()
        assert core is not None
        self._inner = core._session
        self.code_calls = 0
        core._session = self  # type: ignore[assignment]

    def get_verification_code(self, user_id: int) -> str:
        self.code_calls += 1
        return str(self._inner.get_verification_code(user_id))

    def get_pairwise_fingerprint(self, version: int, user_id: int) -> bytes:
        self.code_calls += 1
        return bytes(self._inner.get_pairwise_fingerprint(version, user_id))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _wait_dave_members(port: LiveSessionPort) -> dict[str, Any]:
    while True:
        roles = port.status().to_json()["roles"]
        dave = next((r["dave"] for r in roles if r["name"] == "voice" and r["dave"]), None)
        if dave and dave["state"] == "active" and dave["members"]:
            return dave
        await trio.sleep(0.1)


async def test_status_never_computes_verification_codes_and_the_api_computes_one_once() -> None:
    settings = load_settings(environ={})
    settings = attrs.evolve(settings, notes=attrs.evolve(settings.notes, enabled=False))
    with trio.fail_after(LIMIT):
        async with open_clank(settings, scenario="streamer", api_port=0, demo_watch=False) as info:
            assert info.service is not None
            port = info.service.session
            assert isinstance(port, LiveSessionPort)
            alice = info.sandbox.world.user_by_name("alice").id
            dave = await _wait_dave_members(port)
            assert {m["userId"] for m in dave["members"]} >= {alice}
            assert dave["verificationCodes"] == {}
            davey_session = _CountingDavey(port)
            for _ in range(5):
                port.status()
            assert davey_session.code_calls == 0  # the periodic status is cheap
            assert port.verification_statistics == 0

            headers = {"Authorization": f"Bearer {info.api.token}"}
            async with httpx.AsyncClient(base_url=info.api.url, headers=headers, timeout=30) as client:
                first = (await client.get("/api/dave/verification", params={"user": alice})).json()
                assert first["userId"] == alice and first["name"] == "Alice"
                assert first["code"] and len(first["code"]) == 45 and first["code"].isdigit()
                assert first["grouped"].split(" ")[0] == first["code"][:5]
                again = (await client.get("/api/dave/verification", params={"user": alice})).json()
                assert again["code"] == first["code"]
                assert port.verification_statistics == 1 and davey_session.code_calls == 1
                bad = await client.get("/api/dave/verification", params={"user": "alice"})
                assert bad.status_code == 400 and bad.json()["field"] == "user"
            dave = await _wait_dave_members(port)
            assert dave["verificationCodes"] == {alice: first["code"]}
            assert port.verification_statistics == 1
