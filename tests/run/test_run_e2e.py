"""``clank run`` end to end over loopback: the sandbox, the voice session, the API and shutdown."""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import httpx
import numpy as np
import trio
from clank_cli import clank_env, run_clank_once
from PIL import Image

from clank.config import load_settings
from clank.media.quality import plane_array
from clank.runner import open_clank
from clank.sandbox.app import open_sandbox

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 90


def _settings() -> Any:
    settings = load_settings(environ={})
    return attrs.evolve(settings, notes=attrs.evolve(settings.notes, enabled=True))


def _luma_psnr(jpeg: bytes, source_y: np.ndarray) -> float:
    picture = Image.open(io.BytesIO(jpeg)).convert("YCbCr")
    y = np.asarray(picture)[:, :, 0].astype(np.float64)
    if y.shape != source_y.shape:
        source = Image.fromarray(source_y).resize((y.shape[1], y.shape[0]), Image.Resampling.BILINEAR)
        source_y = np.asarray(source)
    # The source planes are video range (16-235); JPEG is full range.
    ref = (source_y.astype(np.float64) - 16.0) * (255.0 / 219.0)
    mse = float(np.mean((np.clip(ref, 0, 255) - y) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


async def _tool(client: httpx.AsyncClient, name: str, body: object) -> dict[str, Any]:
    response = await client.post(f"/api/tools/{name}", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_agent_watches_the_only_streamer_and_sees_its_screen() -> None:
    with trio.fail_after(LIMIT):
        async with open_clank(_settings(), scenario="streamer", api_port=0, demo_watch=False) as info:
            headers = {"Authorization": f"Bearer {info.api.token}"}
            async with httpx.AsyncClient(base_url=info.api.url, headers=headers, timeout=30) as client:
                # the API is guarded and validates bodies
                anonymous = await client.get("/api/status", headers={"Authorization": "Bearer nope"})
                assert anonymous.status_code == 401
                bad = await client.post("/api/tools/start_screen_watch", json={"target": 42})
                assert bad.status_code == 400 and bad.json()["field"] == "target"

                alice = info.sandbox.world.user_by_name("alice").id
                result = await _tool(client, "start_screen_watch", {})
                assert result["ok"] and result["targetUserId"] == alice
                assert result["transport"] == "native"

                again = await _tool(client, "start_screen_watch", {"target": "alice"})
                assert again["ok"] and again["reused"] and again["targetUserId"] == alice

                while True:
                    look = await _tool(client, "look_at_screen", {})
                    if look["frameReady"]:
                        break
                    await trio.sleep(0.05)
                assert look["reason"] == "frame_context_ready" and look["targetUserId"] == alice
                jpeg = base64.b64decode(look["image"]["dataBase64"])
                source = info.sandbox.media.streamer(alice).source_frame(look["frame"]["rtpTimestamp"])
                assert source is not None, "the streamer no longer has that source frame"
                assert _luma_psnr(jpeg, plane_array(source, 0)) >= 28.0
                other = info.sandbox.media.streamer(alice).source_frame(
                    next(iter(info.sandbox.media.streamer(alice).sources))
                )
                assert other is not None

                status = (await client.get("/api/status")).json()
                kinds = {role["kind"]: role for role in status["roles"]}
                assert kinds["voice"]["state"] == "ready"
                assert kinds["stream_watch"]["qos"]["daveOk"] > 0
                assert status["privacyCode"]

                stopped = await _tool(client, "stop_screen_watch", {})
                assert stopped["ok"]


def _env(**extra: str) -> dict[str, str]:
    return clank_env(CLANK_LOG_FORMAT="json", **extra)


async def _read_banner(stream: trio.abc.ReceiveStream) -> dict[str, str]:
    buffer = b""
    while b"Ctrl-C" not in buffer:
        chunk = await stream.receive_some(4096)
        assert chunk, f"clank run ended before its banner: {buffer!r}"
        buffer += chunk
    fields = {}
    for line in buffer.decode().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in {"dashboard", "api"}:
            fields[parts[0]] = parts[1]
        if "Bearer" in line:
            fields["token"] = line.split("Bearer ", 1)[1].rstrip(")").strip()
    return fields


async def test_clank_run_serves_the_api_and_ctrl_c_leaves_voice(tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr.log"
    with trio.fail_after(LIMIT), stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "clank", "run", "--port", "0", "--scenario", "streamer", "--no-watch"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
            env=_env(),
        )
        try:
            assert process.stdout is not None
            banner = await _read_banner(process.stdout)
            api = banner["api"].removesuffix("/api")
            headers = {"Authorization": f"Bearer {banner['token']}"}
            async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30) as client:
                status = (await client.get("/api/status")).json()
                assert status["inVoice"] and status["mode"] == "sandbox"
                result = await _tool(client, "start_screen_watch", {})
                assert result["ok"]
                assert (await client.get("/", headers={})).status_code == 200  # the dashboard page
            process.send_signal(signal.SIGINT)
            with trio.fail_after(15):
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 0
    events = [json.loads(line) for line in stderr_path.read_text().splitlines() if line.startswith("{")]
    names = [e.get("event") for e in events]
    assert "voice left" in names, "the sandbox never saw us leave voice"
    stopped = next(e for e in events if e.get("event") == "clank stopped")
    assert stopped["shutdown_s"] <= 2.0
    assert banner["token"] not in stderr_path.read_text()


FAILURES = [("bad_token", 3, "clank: authentication failed"), ("unreachable", 4, "clank: connection failed")]


async def test_clank_run_fails_with_one_clear_line() -> None:
    outcomes: dict[str, tuple[int, str]] = {}
    with trio.fail_after(LIMIT):
        async with open_sandbox(scenario="empty") as sb:

            async def run(case: str) -> None:
                env = _env(
                    CLANK_DISCORD_TOKEN="not-a-valid-token-xyz",
                    CLANK_API_URL=sb.api_url if case == "bad_token" else "http://127.0.0.1:9/api",
                    CLANK_GUILD_ID=sb.guild_id,
                    CLANK_CHANNEL_ID=sb.voice_channel_id,
                    CLANK_DISCORD_CONNECT_ATTEMPTS="1",
                )
                outcomes[case] = await run_clank_once(["run", "--port", "0"], env)

            async with trio.open_nursery() as nursery:  # both at once: each mostly starts Python
                for case, _, _ in FAILURES:
                    nursery.start_soon(run, case)
    for case, code, message in FAILURES:
        returncode, stderr = outcomes[case]
        assert returncode == code, (case, stderr[-2000:])
        assert "Traceback" not in stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(message), (case, last)
        assert "not-a-valid-token-xyz" not in stderr
