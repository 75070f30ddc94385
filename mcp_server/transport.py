"""`jobrelay serve`: the MCP server over stdio (default) or Streamable HTTP.

Both transports shut down the same way, on SIGTERM/SIGINT (and, on stdio, at the end of
input): new requests are no longer taken, every wait in progress ends at once and returns its
job handle and state (the `GracefulClock` expires the waits' time limits), the answers are
delivered, and only then does the server's lifespan close the ledger, the sandbox and the
clients. A second signal, or `SHUTDOWN_GRACE_SECONDS` without the calls finishing, cuts it short.

stdio: stdout carries only the protocol. The process's descriptors 0 and 1 are moved aside
while serving (fd 1 then points at stderr), so a stray print or child process can never write
into the wire, and logging goes to stderr.

HTTP: `_http_app` holds the guards (bearer token, Host/Origin allowlists, body limit). Binding
anything but loopback without `JOBRELAY_HTTP_TOKEN` is refused before anything starts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import uvicorn
from pydantic import SecretStr

from mcp_server import telemetry
from mcp_server._bounds import MAX_MESSAGE_BYTES
from mcp_server._clock import Clock, SystemClock
from mcp_server._http_app import (
    HEALTH_PATH,
    MCP_PATH,
    GuardedApp,
    bind_refusal,
    create_http_app,
    host_allowlist,
    origin_allowlist,
)
from mcp_server._jsonrpc_guard import Refusal, check_message
from mcp_server._jsonrpc_guard import encode as encode_answer
from mcp_server._webhook_app import stdio_notice
from mcp_server.config import Settings, load_settings
from mcp_server.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from mcp_server.server import JobRelayServer

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 8.0
"""How long calls in progress may take to finish after a signal (container runtimes usually
allow 10 s between SIGTERM and SIGKILL)."""

_SHORT_TOKEN = 16


class GracefulClock:
    """A `Clock` whose running time limits all expire at once when shutdown begins.

    Every bounded wait in jobrelay goes through `clock.move_on_after`, so expiring those scopes
    makes each wait in progress return what it has (handle, state, when to look again) exactly
    as if its `wait_seconds` had run out: no tool needs to know about shutdown.
    """

    def __init__(self, inner: Clock | None = None) -> None:
        self.inner: Clock = inner or SystemClock()
        self.shutting_down = False
        self._scopes: weakref.WeakSet[anyio.CancelScope] = weakref.WeakSet()

    def monotonic(self) -> float:
        return self.inner.monotonic()

    def time(self) -> float:
        return self.inner.time()

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)

    def move_on_after(self, seconds: float) -> anyio.CancelScope:
        scope = self.inner.move_on_after(seconds)
        if self.shutting_down:
            # Already expired: a wait that goes round its loop again (an update arrived just
            # as shutdown began) must not start a fresh full-length wait.
            scope.cancel()
        else:
            self._scopes.add(scope)  # weakly: a scope that was left and dropped needs no cancel
        return scope

    def begin_shutdown(self) -> None:
        """Expire every time limit, running now or started later (waits return their handles).

        A shared poll loop may run a round early while its waiters leave; it stops when they
        have (nobody left to poll for), and `sleep` (backoff) is untouched.
        """
        self.shutting_down = True
        for scope in list(self._scopes):
            scope.cancel()  # a no-op for a scope already left


# ------------------------------------------------------------------------------------------
# stdio


def _id_key(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _StdioWire:
    """The protocol's stdin/stdout, counting requests that still owe an answer.

    Knowing which requests are unanswered is what lets shutdown wait for exactly those
    answers and then end the input, instead of cutting calls off (the SDK drops whatever is
    unanswered when its input ends). It is also the `stdin`/`stdout` pair handed to the SDK's
    `stdio_server`, which only iterates the one and calls `write`/`flush` on the other.
    """

    def __init__(self, in_fd: int, out_fd: int) -> None:
        self.in_fd = in_fd
        self.out_fd = out_fd
        self._send, self._recv = anyio.create_memory_object_stream[str](0)
        self._unanswered: set[str] = set()
        self._changed = anyio.Event()
        self.stopping = anyio.Event()
        self.forced = False
        self._broken = False
        self._write_lock = anyio.Lock()

    @classmethod
    @contextlib.contextmanager
    def claim(cls) -> Iterator[_StdioWire]:
        """Take fds 0/1 for the protocol; point fd 0 at /dev/null and fd 1 at stderr meanwhile."""
        sys.stdout.flush()
        in_fd = os.dup(0)
        out_fd = os.dup(1)
        _redirect(0, os.devnull, os.O_RDONLY)
        try:
            os.dup2(2, 1)
        except OSError:  # no usable stderr: stray output goes nowhere rather than on the wire
            _redirect(1, os.devnull, os.O_WRONLY)
        try:
            yield cls(in_fd, out_fd)
        finally:
            sys.stdout.flush()  # stray output so far goes to stderr, not the wire
            os.dup2(out_fd, 1)
            os.close(out_fd)
            # in_fd stays open: the reader thread may still be blocked on it.

    # ---- input ----------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[str]:
        return self._recv

    async def deliver(self, line: str) -> None:
        """A line from the client (called from the reader thread); dropped once stopping.

        The line is checked before the SDK parses it (`_jsonrpc_guard`): a malformed one gets
        its own answer here (or a log line) and never reaches the SDK, which would drop it
        without an answer.
        """
        if self.stopping.is_set():
            return
        verdict = check_message(line)
        if isinstance(verdict, Refusal):
            await self.refuse(verdict)
            return
        message = verdict.message
        method = message.get("method")
        if isinstance(method, str) and message.get("id") is not None:
            self._unanswered.add(_id_key(message["id"]))
        elif method == "notifications/cancelled":
            # A cancelled request is never answered (MCP_SDK_V2.md section 2).
            params = message.get("params")
            if isinstance(params, dict):
                self._answered(params.get("requestId"))
        await self._send.send(line)

    async def refuse(self, refusal: Refusal) -> None:
        """Answer (or log and drop) one message the SDK is never shown."""
        refusal.log("stdio")
        if refusal.answer and not self.stopping.is_set():
            await self.write(encode_answer(refusal.response()) + "\n")

    def begin(self) -> None:
        """Stop taking requests: a signal arrived or the input ended."""
        self.stopping.set()

    def end_input(self) -> None:
        """The SDK sees end of input and returns; its lifespan then closes everything."""
        self._send.close()

    async def drained(self) -> None:
        while self._unanswered:
            await self._changed.wait()

    def _answered(self, request_id: object) -> None:
        self._unanswered.discard(_id_key(request_id))
        self._changed.set()
        self._changed = anyio.Event()

    # ---- output ---------------------------------------------------------------------------
    async def write(self, text: str) -> None:
        async with self._write_lock:  # the SDK's answers and the guard's: whole lines each
            if not self._broken:
                try:
                    await anyio.to_thread.run_sync(_write_all, self.out_fd, text.encode())
                except OSError:
                    # The client closed its end: nobody is left to answer.
                    self._broken = True
                    self._unanswered.clear()
        message = _json_object(text)
        if message is not None and "method" not in message and "id" in message:
            self._answered(message["id"])

    async def flush(self) -> None:
        """`write` is unbuffered."""


def _redirect(fd: int, path: str, flags: int) -> None:
    target = os.open(path, flags)
    try:
        os.dup2(target, fd)
    finally:
        os.close(target)


def _read_stdin(wire: _StdioWire, token: anyio.lowlevel.EventLoopToken) -> None:
    """Reader thread: lines of fd 0 into the event loop, then `begin` at end of input.

    A daemon thread using `os.read`, because a blocked read must never keep the process
    alive after shutdown, and a daemon thread blocked inside `sys.stdin` would crash the
    interpreter's exit on the buffer lock.
    """
    pending = b""
    oversized = False  # inside a line longer than MAX_MESSAGE_BYTES: skipped, then refused
    too_large = Refusal(f"the message is larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        while True:
            try:
                chunk = os.read(wire.in_fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                if oversized:
                    oversized = False
                    anyio.from_thread.run(wire.refuse, too_large, token=token)
                elif raw.strip():
                    anyio.from_thread.run(wire.deliver, raw.decode("utf-8", "replace"), token=token)
            if len(pending) > MAX_MESSAGE_BYTES:
                oversized, pending = True, b""
        if oversized:
            anyio.from_thread.run(wire.refuse, too_large, token=token)
        elif pending.strip():
            anyio.from_thread.run(wire.deliver, pending.decode("utf-8", "replace"), token=token)
        anyio.from_thread.run_sync(wire.begin, token=token)
    except Exception:  # noqa: BLE001  # top of a thread: the event loop has already finished
        return


async def _drain_then_end(wire: _StdioWire, clock: GracefulClock, grace: float) -> None:
    await wire.stopping.wait()
    clock.begin_shutdown()
    with anyio.move_on_after(grace):
        await wire.drained()
    wire.end_input()


async def _watch_signals(wire: _StdioWire, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if wire.stopping.is_set():
                log.warning("jobrelay: second signal: stopping now")
                wire.forced = True
                scope.cancel()
                return
            log.warning(
                "jobrelay: %s: finishing the calls in progress, then exiting",
                signal.Signals(signum).name,
            )
            wire.begin()


async def serve_stdio(
    server: JobRelayServer, clock: GracefulClock, *, grace: float = SHUTDOWN_GRACE_SECONDS
) -> int:
    """Serve one client over stdin/stdout until the input ends or a signal arrives."""
    from mcp.server.stdio import stdio_server

    with _StdioWire.claim() as wire:
        async with anyio.create_task_group() as tg:
            token = anyio.lowlevel.current_token()
            threading.Thread(
                target=_read_stdin, args=(wire, token), name="jobrelay-stdin", daemon=True
            ).start()
            tg.start_soon(_drain_then_end, wire, clock, grace)
            if sys.platform != "win32":
                tg.start_soon(_watch_signals, wire, tg.cancel_scope)
            # MCPServer can serve only the process's own stdio; serving given streams takes the
            # low-level server (`_lowlevel_server` is its v2 name, MCP_SDK_V2.md section 8).
            lowlevel = server._lowlevel_server
            async with stdio_server(stdin=cast(Any, wire), stdout=cast(Any, wire)) as (read, write):
                await lowlevel.run(read, write, lowlevel.create_initialization_options())
            tg.cancel_scope.cancel()
    return EXIT_FAILURE if wire.forced else EXIT_OK


# ------------------------------------------------------------------------------------------
# Streamable HTTP


class HttpServer(uvicorn.Server):
    """uvicorn that starts jobrelay's graceful shutdown first and exits 0 after a signal.

    uvicorn re-raises a handled SIGTERM after shutting down (exit status 143); a shutdown we
    completed cleanly is a success. `handle_signals=False` is for servers inside tests.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        guard: GuardedApp,
        on_shutdown: Callable[[], None],
        announce: Callable[[int], None] | None = None,
        handle_signals: bool = True,
    ) -> None:
        super().__init__(config)
        self.guard = guard
        self._on_shutdown = on_shutdown
        self._announce = announce
        self._handle_signals = handle_signals

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        for server in self.servers:
            for sock in server.sockets:
                port: int = sock.getsockname()[1]
                return port
        return self.config.port

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._announce is not None:
            self._announce(self.port)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)


def http_server(
    server: JobRelayServer,
    clock: GracefulClock,
    *,
    host: str,
    port: int,
    token: SecretStr | None,
    allowed_hosts: Sequence[str],
    allowed_origins: Sequence[str],
    announce: Callable[[int], None] | None = None,
    handle_signals: bool = True,
    grace: float = SHUTDOWN_GRACE_SECONDS,
) -> HttpServer:
    """A uvicorn server for `server` over Streamable HTTP at `/mcp`, not yet started."""
    app: GuardedApp = create_http_app(
        server, token=token, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins
    )

    def begin_shutdown() -> None:
        app.begin_shutdown()
        clock.begin_shutdown()

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # access lines would carry URLs; nothing sensitive belongs in logs
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(grace)),
    )
    return HttpServer(
        config,
        guard=app,
        on_shutdown=begin_shutdown,
        announce=announce,
        handle_signals=handle_signals,
    )


def _announcer(
    host: str, token: SecretStr | None, allowed_hosts: Sequence[str]
) -> Callable[[int], None]:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host

    def announce(port: int) -> None:
        auth = "bearer token required" if token is not None else "no token, loopback only"
        print(
            f"jobrelay: MCP over Streamable HTTP at http://{shown}:{port}{MCP_PATH} "
            f"({auth}; health check: {HEALTH_PATH})",
            file=sys.stderr,
            flush=True,
        )
        names = sorted({h.removesuffix(":*") for h in allowed_hosts})
        print(
            f"jobrelay: accepted Host names: {', '.join(names)} (add more with --allow-host)",
            file=sys.stderr,
            flush=True,
        )

    return announce


# ------------------------------------------------------------------------------------------
# entry point


def serve(
    *,
    transport: str,
    host: str,
    port: int,
    sandbox: bool,
    allow_hosts: Sequence[str] = (),
    allow_origins: Sequence[str] = (),
) -> int:
    """`jobrelay serve`. Returns the process exit status."""
    names = _provider_names()  # registered first: they declare what their settings mean
    settings: Settings = load_settings()  # the SDK is imported only once a start is allowed
    if sandbox:
        settings = settings.model_copy(update={"sandbox": "on"})
    missing = [m for p in names if (m := settings.missing_key(p)) is not None]
    if missing:  # JOBRELAY_SANDBOX=0 without a key: every call would fail; say so now
        for line in missing:
            print(f"jobrelay: {line}", file=sys.stderr)
        return EXIT_USAGE
    if (problem := _observability(settings)) is not None:
        print(f"jobrelay: {problem}", file=sys.stderr)
        return EXIT_USAGE
    clock = GracefulClock(SystemClock())
    if transport == "stdio":
        from mcp_server.server import build_server

        anyio.run(_check_ledger, settings)
        _announce_start(settings)
        stdio_notice(settings)  # a webhook secret is of no use here
        if _stdin_is_a_terminal():
            print(
                "jobrelay: waiting for an MCP client on stdin. This is a stdio MCP server: "
                "let an MCP host start it (see the README), or try `jobrelay demo`. "
                "Ctrl-C stops it.",
                file=sys.stderr,
                flush=True,
            )
        return _run(lambda: serve_stdio(build_server(settings, clock=clock), clock))

    refusal = bind_refusal(host, settings.http_token)
    if refusal is not None:
        print(refusal, file=sys.stderr)
        return EXIT_USAGE
    try:
        hosts = host_allowlist(host, allow_hosts)
        origins = origin_allowlist(allow_origins)
    except ValueError as exc:
        print(f"jobrelay serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Open the ledger once, after the refusals (a refused start touches nothing) and before
    # uvicorn: a damaged or locked file then stops the start with the CLI's one-line message.
    anyio.run(_check_ledger, settings)
    _announce_start(settings)
    token = settings.http_token
    if token is not None and len(token.get_secret_value()) < _SHORT_TOKEN:
        log.warning("jobrelay: JOBRELAY_HTTP_TOKEN is short; use 32 or more random characters")
    from mcp_server.server import build_server

    http = http_server(
        build_server(settings, clock=clock),
        clock,
        host=host,
        port=port,
        token=token,
        allowed_hosts=hosts,
        allowed_origins=origins,
        announce=_announcer(host, token, hosts),
    )

    async def run_http() -> int:
        await http.serve()
        return EXIT_OK if http.started else EXIT_FAILURE

    return _run(run_http)


def _provider_names() -> list[str]:
    """The registered providers' names (built-in and any a deployment registered)."""
    from mcp_server.providers import default_registry

    return default_registry().names()


def _observability(settings: Settings) -> str | None:
    """JOBRELAY_LOG_FORMAT and JOBRELAY_METRICS (issue 19); a problem to print, or None."""
    telemetry.configure_logging(settings.log_format, settings.secrets())
    if not settings.metrics:
        return None
    try:
        telemetry.enable()
    except telemetry.TelemetryUnavailable as exc:
        return str(exc)
    return None


def _stdin_is_a_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _announce_start(settings: Settings) -> None:
    """One plain stderr line saying which APIs the embedded sandbox serves, and why."""
    from mcp_server.providers import default_registry

    by_reason: dict[str, list[str]] = {}
    for p in default_registry():
        if (reason := p.sandbox_reason(settings)) is not None:
            by_reason.setdefault(reason, []).append(p.service_name)
    served = [f"{' and '.join(who)} ({reason})" for reason, who in by_reason.items()]
    if served:
        print(
            f"jobrelay: the embedded sandbox serves {' and '.join(served)}: simulated data, "
            "no API calls.",
            file=sys.stderr,
            flush=True,
        )


async def _check_ledger(settings: Settings) -> None:
    from mcp_server.ledger import open_ledger

    async with open_ledger(settings):
        pass


def _run(main: Callable[[], Any]) -> int:
    """Run `main` under anyio (the CLI turns a LedgerError into one line)."""
    code: int = anyio.run(main)
    return code
