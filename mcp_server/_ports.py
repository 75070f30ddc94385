"""Can `jobrelay serve --transport http` / `jobrelay sandbox` listen where asked? One line if not.

Checked before uvicorn starts, so a mistyped port or one already taken is a one-line message
naming the fix and exit status 2, never a traceback or uvicorn's own error and exit status.
"""

from __future__ import annotations

import errno
import socket

MAX_PORT = 65535


def port_problem(command: str, host: str, port: int) -> str | None:
    """None when `host:port` can be listened on now, else one line that says what to change.

    Port 0 asks the system for a free port. The probe binds and closes at once.
    """
    if not 0 <= port <= MAX_PORT:
        return (
            f"jobrelay {command}: --port {port} is not a TCP port. Fix: use a number from 1 to "
            f"{MAX_PORT} (or 0 for any free port)."
        )
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        return (
            f"jobrelay {command}: --host {host} cannot be resolved ({exc}). Fix: use an address "
            "of this machine, e.g. --host 127.0.0.1."
        )
    family, kind, proto, _name, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return (
                f"jobrelay {command}: port {port} on {host} is already in use. Fix: stop the "
                "program listening there, or choose another port with --port."
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            return (
                f"jobrelay {command}: {host} is not an address of this machine. Fix: use one "
                "that is, e.g. --host 127.0.0.1."
            )
        if exc.errno == errno.EACCES:
            return (
                f"jobrelay {command}: listening on port {port} needs privileges this user does "
                "not have. Fix: choose --port 1024 or above."
            )
        return f"jobrelay {command}: cannot listen on {host}:{port} ({exc.strerror or exc})."
    return None
