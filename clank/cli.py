"""Command line: ``clank run``, ``clank mcp``, ``clank sandbox``, ``clank config``, ``clank tools``.

Expected failures (bad config, refused token, unreachable gateway) end with one clear line on
stderr and a non-zero exit code — never a traceback. Bugs still show their traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Final, NoReturn

import trio

from clank import __version__
from clank.config import Settings, load_settings, settings_table
from clank.errors import (
    AuthenticationFailed,
    ChannelUnavailable,
    ClankError,
    ConfigError,
    ListenFailed,
    TransportError,
)
from clank.io.groups import describe, first_of, leaves
from clank.logging import configure_logging, register_secret

EXIT_CONFIG = 2
EXIT_AUTH = 3
EXIT_TRANSPORT = 4
EXIT_LISTEN = 5
EXIT_CHANNEL = 6
EXIT_ERROR = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clank",
        description="Eyes and a voice in Discord: native Go Live watch, voice, and a local Discord sandbox.",
    )
    parser.add_argument("--version", action="version", version=f"clank {__version__}")
    parser.add_argument(
        "--config", type=Path, help="TOML settings file (default: conf/clank.toml or $CLANK_CONFIG)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="join voice and serve the agent API and dashboard",
        description=(
            "Run clank. Without a Discord token (CLANK_DISCORD_TOKEN) it starts the built-in sandbox with a "
            "demo scenario — a simulated user who talks and goes live, and one with a webcam — joins the "
            "voice channel and starts watching the stream exactly as an agent would. With a token it "
            "connects to Discord (or CLANK_API_URL / CLANK_GATEWAY_URL) and joins the configured channel. "
            "The dashboard and the HTTP API listen on api.host:api.port (127.0.0.1:8787 by default)."
        ),
    )
    run.add_argument(
        "--scenario", help="sandbox scenario to run when no token is set (default: sandbox.scenario)"
    )
    run.add_argument("--port", type=int, help="port for the HTTP API and dashboard (default: api.port)")
    run.add_argument(
        "--no-watch", action="store_true", help="in sandbox mode, don't start watching on startup"
    )

    sandbox = sub.add_parser(
        "sandbox",
        help="run the local Discord (REST, gateway, voice and stream servers) on its own",
        description=(
            "Run the local Discord sandbox. Prints exactly one JSON line on stdout when ready (api_url, "
            "gateway_url, token, bot_token, guild_id, voice_channel_id, text_channel_id, users), then logs "
            "to stderr until interrupted. Point any Discord client library's API base URL at api_url."
        ),
    )
    sandbox.add_argument("--host", default=None, help="address to bind (default: sandbox.host, 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=None, help="port of the REST API (0 = any free port)")
    sandbox.add_argument("--scenario", default=None, help="scenario: demo, streamer, empty, churn")
    sandbox.add_argument(
        "--tls",
        action="store_true",
        help="serve the voice/stream websockets as wss:// with a throwaway CA (its path: ca_file)",
    )

    mcp = sub.add_parser(
        "mcp",
        help="serve the agent tools over MCP on stdin/stdout (for desktop agents)",
        description=(
            "Run clank like `clank run` (sandbox mode without a token) and serve every agent tool over the "
            "Model Context Protocol on stdin/stdout. Logs go to stderr. The HTTP API and dashboard listen "
            "on an ephemeral port unless --port is given; they also serve MCP at /mcp (streamable HTTP)."
        ),
    )
    mcp.add_argument("--scenario", help="sandbox scenario when no token is set (default: sandbox.scenario)")
    mcp.add_argument("--port", type=int, help="port for the HTTP API and dashboard (default: any free port)")

    sub.add_parser("config", help="print the effective settings (secrets hidden) and where they come from")
    tools = sub.add_parser("tools", help="print the agent tool schemas (JSON) ready to hand to an LLM")
    tools.add_argument(
        "--format",
        choices=("anthropic", "openai", "openai-responses"),
        default="anthropic",
        help="anthropic: Messages API tools (default); openai: Chat Completions function tools; "
        "openai-responses: the Responses API's flat function tools (both OpenAI shapes strict-mode)",
    )
    return parser


def _fail(code: int, message: str) -> NoReturn:
    print(f"clank: {message}", file=sys.stderr)
    raise SystemExit(code)


def _load(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        _fail(EXIT_CONFIG, f"configuration error: {exc}")


def _cmd_config(settings: Settings) -> None:
    for key, default, expected in settings_table():
        value: object = settings
        for part in key.split("."):
            value = getattr(value, part)
        shown = "<set>" if key.endswith(("token", "api_key")) and value else value
        marker = "" if value == default else "   (overridden)"
        print(f"{key} = {shown!r}   # {expected}{marker}")


def _cmd_tools(fmt: str) -> None:
    from clank.control.tool_formats import tools_in_format

    print(json.dumps(tools_in_format(fmt), indent=2))


def _cmd_sandbox(settings: Settings, args: argparse.Namespace) -> None:
    from clank.sandbox.app import serve_sandbox_cli

    host = args.host or settings.sandbox.host
    port = settings.sandbox.port if args.port is None else args.port
    scenario = args.scenario or settings.sandbox.scenario
    dave = settings.sandbox.dave_protocol_version
    trio.run(partial(serve_sandbox_cli, host, port, scenario, tls=args.tls, dave_protocol_version=dave))


def _cmd_run(settings: Settings, args: argparse.Namespace) -> None:
    from clank.runner import run_clank

    register_secret(settings.discord.token)
    register_secret(settings.api.token)
    register_secret(settings.notes.api_key)
    trio.run(run_clank, settings, args)


def _cmd_mcp(settings: Settings, args: argparse.Namespace) -> None:
    from clank.runner import run_mcp

    register_secret(settings.discord.token)
    register_secret(settings.api.token)
    register_secret(settings.notes.api_key)
    trio.run(run_mcp, settings, args)


#: Which exit code and line prefix an expected error gets (most specific class first; docs/operations.md).
EXIT_TABLE: Final[tuple[tuple[type[ClankError], int, str], ...]] = (
    (AuthenticationFailed, EXIT_AUTH, "authentication failed: "),
    (ListenFailed, EXIT_LISTEN, ""),
    (ChannelUnavailable, EXIT_CHANNEL, "voice channel unavailable: "),
    (TransportError, EXIT_TRANSPORT, "connection failed: "),
    (ConfigError, EXIT_CONFIG, "configuration error: "),
    (ClankError, EXIT_ERROR, ""),
)


def exit_for(failure: BaseException) -> tuple[int, list[str]] | None:
    """The exit code and stderr lines for ``failure`` (one error, or a group of them); None: a bug.

    The first of our errors sets the code and the first line; when several things failed at
    once, every other error is named after it (``clank: also: Type: message``), not dropped.
    """
    first = first_of(failure, ClankError)
    if first is None:
        return None
    code, prefix = next((code, prefix) for kind, code, prefix in EXIT_TABLE if isinstance(first, kind))
    others = [f"clank: also: {describe(e)}" for e in leaves(failure) if e is not first]
    return code, [f"clank: {prefix}{first}", *others]


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = _load(args)
    configure_logging(settings.log.format, settings.log.level)
    try:
        _dispatch(args, settings)
    except (ClankError, BaseExceptionGroup) as exc:
        failure = exit_for(exc)
        if failure is None:
            raise
        code, lines = failure
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(code) from None


def _dispatch(args: argparse.Namespace, settings: Settings) -> None:
    try:
        if args.command == "config":
            _cmd_config(settings)
        elif args.command == "tools":
            _cmd_tools(args.format)
        elif args.command == "sandbox":
            _cmd_sandbox(settings, args)
        elif args.command == "run":
            _cmd_run(settings, args)
        elif args.command == "mcp":
            _cmd_mcp(settings, args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
