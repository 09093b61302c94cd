"""TCP ports for `rmswatch serve` and `rmswatch demo`: a valid number, free before "serving" is
printed, and, when taken, the process holding it named (psutil)."""

from __future__ import annotations

import argparse
import errno
import socket

import psutil

from rmswatch._validation import RmswatchError

PORT_RANGE = (1, 65535)


class PortInUseError(RmswatchError):
    """The port is held by another process; the message names it and suggests --port."""

    def __init__(self, host: str, port: int, holder: str | None) -> None:
        self.host, self.port, self.holder = host, port, holder
        by = f" by {holder}" if holder else " by another program"
        super().__init__(
            f"port {port} on {host} is already in use{by}; "
            f"stop it or pick another port with --port {port + 1 if port < 65535 else 8050}"
        )


def port_number(text: str) -> int:
    """argparse `type=` for --port: an integer in 1-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)") from None
    low, high = PORT_RANGE
    if not low <= port <= high:
        raise argparse.ArgumentTypeError(f"{port} is not a port number ({low}-{high})")
    return port


def ensure_free(host: str, port: int) -> None:
    """Raise PortInUseError when `host:port` can't be bound (SO_REUSEADDR, like the server)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(host, port, holder_of(port)) from None
            raise


def holder_of(port: int) -> str | None:
    """`pid 1234 (python -m rmswatch serve ...)` of the process listening on `port`; None when
    the system won't say (another user's process)."""
    try:
        listening = [
            c
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        ]
    except psutil.AccessDenied:
        return None
    for connection in listening:
        if connection.pid is None:
            continue
        try:
            command = " ".join(" ".join(psutil.Process(connection.pid).cmdline()).split()) or "?"
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            command = "?"
        return f"pid {connection.pid} ({command[:120]})"
    return None


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` itself holds a listening socket on `port`."""
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in connections
    )
