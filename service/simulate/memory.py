"""The server's peak memory, when the harness runs on the server's machine (Linux /proc).

Given process ids, or else found as the processes that hold the listening socket
of a loopback URL's port (uvicorn's workers share it), with their children; the
figure is the sum of their peak resident sizes (``VmHWM``), an upper bound of the
peak of the whole. Against a remote server there is nothing to see: None.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

PROC = Path("/proc")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("net/tcp", "net/tcp6"):
        try:
            lines = (PROC / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1],
                                                                  16) == port:
                inodes.add(fields[9])
    return inodes


def _pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()] if PROC.exists() else []


def listening_pids(port: int) -> set[int]:
    """Processes holding a socket that listens on ``port`` (ours to read only)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    found = set()
    for pid in _pids() if wanted else []:
        try:
            if any(os.readlink(fd) in wanted for fd in (PROC / str(pid) / "fd").iterdir()):
                found.add(pid)
        except OSError:
            continue
    return found


def with_children(pids: set[int]) -> set[int]:
    parents: dict[int, int] = {}
    for pid in _pids():
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except OSError:
            continue
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
    family, grew = set(pids), True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in family} - family
        family |= children
        grew = bool(children)
    return family


def _peak(pid: int) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss(pids: tuple[int, ...], url: str) -> int | None:
    """Bytes, or None when the server's processes cannot be seen from here."""
    chosen = set(pids)
    if not chosen:
        parts = urlsplit(url)
        if parts.hostname not in _LOOPBACK:
            return None
        chosen = listening_pids(parts.port or (443 if parts.scheme == "https" else 80))
    total = sum(_peak(pid) for pid in with_children(chosen)) if chosen else 0
    return total or None
