"""The `jobrelay` command (DESIGN.md section 1). Parsing only; each subcommand lives elsewhere."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mcp_server import __version__
from mcp_server.errors import ConfigError
from mcp_server.exit_codes import EXIT_OK, EXIT_USAGE
from mcp_server.ledger import LedgerError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobrelay",
        description=(
            "MCP server for long-running Seamless.ai research and AgentSEO jobs: start, watch, "
            "and explain errors. Without API keys it runs against an embedded sandbox."
        ),
    )
    parser.add_argument("--version", action="version", version=f"jobrelay {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765)")
    serve.add_argument(
        "--sandbox", action="store_true", help="serve the embedded sandbox even if keys are set"
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="HTTP: also accept this Host name (DNS-rebinding allowlist; loopback is always "
        "accepted), repeatable",
    )
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="HTTP: also accept requests with this Origin, e.g. https://app.example.com, "
        "repeatable",
    )

    sandbox = sub.add_parser("sandbox", help="serve the simulated Seamless and AgentSEO APIs")
    sandbox.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=8766, help="port (default 8766)")
    sandbox.add_argument("--seed", type=int, default=0, help="seed for generated records")
    sandbox.add_argument(
        "--time-scale", type=float, default=1.0, help="virtual seconds per real second"
    )
    sandbox.add_argument(
        "--job-seconds", type=float, default=None, help="how long simulated jobs take"
    )

    sub.add_parser("demo", help="scripted end-to-end session against the sandbox")

    explain = sub.add_parser(
        "explain", help="advice for an upstream HTTP status, error code, body or job status"
    )
    explain.add_argument("status", type=int, nargs="?", help="HTTP status, e.g. 429")
    explain.add_argument("--code", help="API error code, e.g. insufficientCredits")
    explain.add_argument(
        "--body", help="the response body as received (JSON or text), e.g. '{\"code\": ...}'"
    )
    explain.add_argument(
        "--job-status", help="a job's status as the API reported it, e.g. failed or stuck"
    )
    explain.add_argument("--provider", choices=[*_provider_names(), "auto"], default="auto")
    explain.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="K:V",
        help="a response header, repeatable (e.g. Retry-After:30)",
    )

    sub.add_parser("doctor", help="check configuration and reachability")
    return parser


def _provider_names() -> list[str]:
    """`explain --provider` choices: every registered provider, in registration order."""
    from mcp_server.providers import default_registry

    return default_registry().names()


def _configure_logging() -> None:
    """Logs go to stderr only: on stdio, stdout carries nothing but the protocol."""
    import logging

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )


def _skip_httpx_cli() -> None:
    """httpx's package init imports its command-line client (`httpx._main`, which loads click
    and pygments, ~0.4 MB resident in a server) only to offer `httpx.main`, which jobrelay
    never calls. A None entry in `sys.modules` makes that one import fail, and httpx takes the
    path it takes when its `cli` extra is not installed (a stub `main`). Only the jobrelay
    command does this, before anything imports httpx; an embedding program is left alone."""
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    _skip_httpx_cli()
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "sandbox" or (args.command == "serve" and args.transport == "http"):
        from mcp_server._ports import port_problem

        if (problem := port_problem(args.command, args.host, args.port)) is not None:
            print(problem, file=sys.stderr)
            return EXIT_USAGE
    try:
        if args.command == "sandbox":
            from mcp_server.sandbox.app import serve_sandbox

            return serve_sandbox(
                host=args.host,
                port=args.port,
                seed=args.seed,
                time_scale=args.time_scale,
                job_seconds=args.job_seconds,
            )
        if args.command == "serve":
            from mcp_server.transport import serve

            _configure_logging()
            return serve(
                transport=args.transport,
                host=args.host,
                port=args.port,
                sandbox=args.sandbox,
                allow_hosts=args.allow_host,
                allow_origins=args.allow_origin,
            )
        if args.command == "explain":
            from mcp_server.advice import explain_cli
            from mcp_server.providers import default_registry

            default_registry()  # the providers' advice tables register with them

            try:
                print(
                    explain_cli(
                        args.status,
                        args.code,
                        args.provider,
                        list(args.header),
                        body=args.body,
                        job_status=args.job_status,
                    )
                )
            except ValueError as exc:
                print(f"jobrelay explain: {exc}", file=sys.stderr)
                return EXIT_USAGE
            return EXIT_OK
        if args.command == "demo":
            from mcp_server.demo import run_demo

            return run_demo()
        if args.command == "doctor":
            from mcp_server.doctor import run_doctor

            return run_doctor()
        parser.error(f"unknown command {args.command!r}")
    except ConfigError as exc:
        print(f"jobrelay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LedgerError as exc:
        # The ledger file cannot be used (damaged, locked, foreign, unwritable): one line that
        # names the file and what to do, never a traceback. The file was left untouched.
        print(f"jobrelay: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except BaseExceptionGroup as group:
        # The server's lifespan opens the ledger inside the SDK's task groups (stdio), so
        # its LedgerError arrives wrapped in exception groups.
        found, _rest = group.split(LedgerError)
        if found is None:
            raise
        leaf: BaseException = found
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        print(f"jobrelay: {leaf}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
