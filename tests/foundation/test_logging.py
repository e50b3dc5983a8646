"""Logging: secrets never reach a log line; context is bound through contextvars."""

from __future__ import annotations

import io
import json
import logging

import structlog

from clank.logging import RECENT, REDACTED, bound, configure_logging, get_logger, register_secret

USER_TOKEN = "mfa.user-token-0123456789abcdef"
VOICE_TOKEN = "voice-tok-66d29164ee8cd919"
STREAM_TOKEN = "stream-tok-91f8016f34a5cd17"
SHARE_TOKEN = "share-tok-a1b2c3d4e5f6"


def _capture() -> io.StringIO:
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    return out


def test_secrets_never_reach_a_log_line() -> None:
    out = _capture()
    for secret in (USER_TOKEN, VOICE_TOKEN, STREAM_TOKEN, SHARE_TOKEN):
        register_secret(secret)
    log = get_logger("clank.test")
    log.info("identify", token=USER_TOKEN, url=f"wss://x/?token={VOICE_TOKEN}")
    log.info("stream credentials", endpoint="127.0.0.1:1", credentials={"token": STREAM_TOKEN, "x": 1})
    log.warning(f"share link created with {SHARE_TOKEN}", items=[SHARE_TOKEN])
    try:
        raise RuntimeError(f"boom {USER_TOKEN}")
    except RuntimeError:
        log.exception("failure")
    logging.getLogger("hypercorn.error").warning("GET /share/%s", SHARE_TOKEN)
    text = out.getvalue()
    for secret in (USER_TOKEN, VOICE_TOKEN, STREAM_TOKEN, SHARE_TOKEN):
        assert secret not in text
    assert text.count(REDACTED) >= 6
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["event"] == "identify" and lines[0]["token"] == REDACTED
    assert "hypercorn" in text  # stdlib lines went through the same pipeline


def test_unregistered_key_named_token_is_still_redacted() -> None:
    out = _capture()
    get_logger("clank.test").info("x", token="never-registered-value", secret_key=[1, 2, 3])
    line = json.loads(out.getvalue())
    assert line["token"] == REDACTED and line["secret_key"] == REDACTED


def test_context_is_bound_for_children() -> None:
    out = _capture()
    with bound(guild="111", channel="222", role="voice"):
        get_logger("clank.test").info("inside")
    get_logger("clank.test").info("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["guild"] == "111" and inside["role"] == "voice"
    assert "role" not in outside
    structlog.contextvars.clear_contextvars()


def test_recent_events_keep_redacted_copies() -> None:
    _capture()
    register_secret(USER_TOKEN)
    before = RECENT.since(0)
    last = before[-1]["n"] if before else 0
    get_logger("clank.test").info("recent", detail=f"has {USER_TOKEN}")
    new = RECENT.since(last)
    assert new and new[-1]["event"] == "recent"
    assert USER_TOKEN not in json.dumps(new)


def test_console_lines_stay_short_and_json_keeps_every_figure() -> None:
    summary = {"figures": list(range(2000))}
    for fmt, short in (("console", True), ("json", False)):
        out = io.StringIO()
        configure_logging(fmt, "info", stream=out)
        get_logger("clank.test").info("role ended", summary=summary, role="voice")
        line = out.getvalue().strip().splitlines()[-1]
        if short:
            assert len(line) < 400 and "role=voice" in line and "…" in line
        else:
            assert json.loads(line)["summary"] == summary
