"""A ready server calls nobody: no child processes, no DNS look-up, no outbound connection (issue: OpenVINO's
telemetry forked ~50 children per model load that resolved an analytics host and kept the listening socket).

The real ``mri-classifier serve`` runs on the OpenVINO runtime (the one that converts the model) with a
``sitecustomize`` that records Python's audit events for name look-ups, binds, connections and new processes
into a file; the kernel's view (children in /proc, the process's sockets) backs it up for native code. The
server's own bind of its listening port must be in that file: without it the hook did not run in the server,
and an empty record would prove nothing.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.server import ServerProcess
from tests.service.images import jpeg

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: Audit events that mean "this process reached out or started another process".
WATCHED = (
    "socket.connect",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyaddr",
    "socket.sendto",
    "os.fork",
    "os.forkpty",
    "os.posix_spawn",
    "os.exec",
    "os.system",
    "subprocess.Popen",
)

#: Recorded too, as the proof that the hook runs in the server: its own listening socket is bound.
BIND = "socket.bind"

SITECUSTOMIZE = """
import json, os, sys
_LOG = {log!r}
_WATCHED = {watched!r}
def _hook(event, args):
    if event in _WATCHED:
        with open(_LOG, "a") as out:
            first = args[0] if args else None
            host = first if isinstance(first, str) or first is None else repr(first)
            address = repr(args[1]) if event == {bind!r} and len(args) > 1 else None
            record = {{"pid": os.getpid(), "event": event, "host": host, "address": address,
                      "args": repr(args)[:200]}}
            out.write(json.dumps(record) + "\\n")
sys.addaudithook(_hook)
"""


def write_hook(directory: Path, audit_log: Path) -> None:
    """A ``sitecustomize.py`` in ``directory`` that appends the watched audit events (and binds) to ``audit_log``."""
    directory.mkdir(exist_ok=True)
    text = textwrap.dedent(SITECUSTOMIZE.format(log=str(audit_log), watched=(*WATCHED, BIND), bind=BIND))
    (directory / "sitecustomize.py").write_text(text)


def children(pid: int) -> list[int]:
    """The process's child processes, from every thread's /proc children list."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _inet_sockets(pid: int) -> dict[int, tuple[str, str, str, str]]:
    """inode -> (protocol, local, remote, state) of the namespace's TCP/UDP sockets (hex, as in /proc/net)."""
    table: dict[int, tuple[str, str, str, str]] = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        path = Path(f"/proc/{pid}/net/{proto}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            table[int(fields[9])] = (proto, fields[1], fields[2], fields[3])
    return table


def _is_loopback(hex_address: str) -> bool:
    host = hex_address.split(":")[0]
    if len(host) == 8:  # IPv4, little-endian
        return socket.inet_ntoa(struct.pack("<I", int(host, 16))).startswith("127.")
    raw = bytes.fromhex(host)
    words = struct.unpack("<4I", raw)
    address = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
    return address in ("::1", "::") or address.startswith("::ffff:127.")


def open_sockets(pid: int) -> list[tuple[str, str, str, str]]:
    """The inet sockets held by the process (through its file descriptors)."""
    table = _inet_sockets(pid)
    held = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inode = int(target[len("socket:[") : -1])
            if inode in table:
                held.append(table[inode])
    return held


#: Look-ups of these are the server resolving its own bind address, not a call out.
LOCAL_NAMES = (None, "127.0.0.1", "::1", "localhost", "0.0.0.0", "::")


def _binding_itself(event: dict[str, Any]) -> bool:
    """A look-up of a local name, or a bind to a loopback address: the server setting up its own socket."""
    if event["event"] == BIND:
        address = ast.literal_eval(event["address"] or "None")
        return isinstance(address, tuple) and address[0] in ("127.0.0.1", "::1")
    return event["event"] == "socket.getaddrinfo" and event["host"] in LOCAL_NAMES


@pytest.fixture
def watched_server(model_root: Path, tmp_path: Path) -> ServerProcess:
    audit_log = tmp_path / "audit.jsonl"
    hook_dir = tmp_path / "hook"
    write_hook(hook_dir, audit_log)
    python_path = os.pathsep.join(p for p in (str(hook_dir), os.environ.get("PYTHONPATH", "")) if p)
    server = ServerProcess(model_root, tmp_path, MRI_RUNTIME="openvino", PYTHONPATH=python_path)
    server.audit_log = audit_log  # type: ignore[attr-defined]
    return server


def read_events(audit_log: Path) -> list[dict[str, Any]]:
    """The recorded events; a missing file means the hook never ran, which is a failure, not "no events"."""
    assert audit_log.is_file(), f"no audit log at {audit_log}: the sitecustomize hook did not run"
    return [json.loads(line) for line in audit_log.read_text().splitlines()]


def test_the_audit_hook_sees_a_lookup_and_a_bind(tmp_path: Path) -> None:
    """The instrument works: a process that resolves a name and binds a socket is caught by the same
    sitecustomize, under its own pid, with the bound address."""
    audit_log = tmp_path / "audit.jsonl"
    write_hook(tmp_path, audit_log)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = (
        "import os, socket\ntry:\n    socket.getaddrinfo('localhost', 80)\nexcept OSError:\n    pass\n"
        "with socket.socket() as s:\n    s.bind(('127.0.0.1', 0))\nprint(os.getpid())"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60, capture_output=True)
    events = read_events(audit_log)
    assert "socket.getaddrinfo" in [e["event"] for e in events]
    binds = [e for e in events if e["event"] == BIND]
    assert [(e["pid"], e["address"]) for e in binds] == [(int(done.stdout), repr(("127.0.0.1", 0)))]


def test_ready_server_has_no_children_no_lookups_and_no_outbound_sockets(watched_server: ServerProcess) -> None:
    with watched_server as server:
        server.wait_ready()
        with httpx.Client(timeout=60) as client:
            answer = client.post(f"{server.url}/predict", files={"file": ("a.jpg", jpeg(1), "image/jpeg")})
            assert answer.status_code == 200, answer.text
            assert client.get(f"{server.url}/readyz").json()["model"]["runtime"] == "openvino"
        assert children(server.pid) == []
        sockets = open_sockets(server.pid)
        listening = [s for s in sockets if s[0].startswith("tcp") and s[3] == "0A"]
        assert len(listening) == 1, sockets
        for proto, local, remote, _state in sockets:
            assert proto.startswith("tcp"), f"a UDP socket is open (DNS?): {local} -> {remote}"
            assert _is_loopback(local), f"socket bound to a non-loopback address: {local}"
            if not remote.startswith(("00000000:0000", "00000000000000000000000000000000:0000")):
                assert _is_loopback(remote), f"connection to a non-loopback peer: {remote}"
        events = read_events(server.audit_log)  # type: ignore[attr-defined]
        own_bind = {"pid": server.pid, "event": BIND, "address": repr(("127.0.0.1", server.port))}
        assert [e for e in events if own_bind.items() <= e.items()], (
            f"the server's bind of its port is not recorded: the hook did not run in it ({events[:5]})"
        )
        server_events = [e for e in events if not _binding_itself(e)]
        assert server_events == [], f"the server reached out or started processes: {server_events[:5]}"
