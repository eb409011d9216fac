"""No one else gets in: no listening socket, no inet socket, and every socket a child holds is
an AF_UNIX socketpair leading to its host (or to itself), held by nobody else
(see docs/RELIABILITY.md, trust model)."""

from __future__ import annotations

import re
import shutil
import subprocess

import psutil
import pytest

from .. import targets
from ..conftest import unique
from ..test_channels import ask
from . import rtargets


def _unix_sockets() -> dict[int, tuple[str, int, set[int]]]:
    """inode -> (state, peer inode, pids holding it), for every unix socket on the machine (ss -xap)."""
    out = subprocess.run(["ss", "-xapnH"], capture_output=True, text=True, check=True).stdout
    sockets = {}
    for line in out.splitlines():
        fields = line.split()
        # Netid State Recv-Q Send-Q Local-Address Local-inode Peer-Address Peer-inode [users:(...)]
        if len(fields) < 8 or not fields[5].isdigit() or not fields[7].isdigit():
            continue
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        sockets[int(fields[5])] = (fields[1], int(fields[7]), pids)
    return sockets


@pytest.mark.timeout(60)
def test_no_listening_socket_and_no_one_else_holds_an_end(host):
    names = [unique(), unique()]
    bot = host({name: targets.agent for name in names})
    for name in names:
        assert ask(name, "echo", "up") == "up"  # connected and talking
        assert ask(name, "get", "k") is None  # a sync store call: the thread's lane
    me = psutil.Process()
    children = {bot.process_manager.pid(name): name for name in names}
    procs = [me, *(psutil.Process(pid) for pid in children)]
    ours = {p.pid for p in procs}
    for p in procs:
        assert p.net_connections(kind="inet") == [], f"{p.pid} has inet sockets"
        assert [c for c in p.net_connections(kind="all") if c.status == psutil.CONN_LISTEN] == []
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed: the peer check needs it")
    sockets = _unix_sockets()
    links = {}
    for inode, (state, peer, holders) in sockets.items():
        if not holders & ours:
            continue
        assert state != "LISTEN", f"listening unix socket {inode} held by {holders}"
        peer_holders = sockets.get(peer, ("", 0, set()))[2]
        assert holders <= ours and peer_holders <= ours, f"socket {inode} ({holders}) <-> {peer} ({peer_holders})"
        for pid in children:
            if pid in holders:
                # a child's socket is its alone, and leads to itself (a self-pipe) or to its host
                assert holders == {pid} and peer_holders <= {pid, me.pid}, (inode, holders, peer_holders)
            if holders == {pid} and peer_holders == {me.pid}:
                links.setdefault(pid, []).append(inode)
    # per child: the main link, the hand-off socket and one lane (the thread that called the
    # store), each held by that child alone, its other end by the host alone
    assert {pid: len(inodes) for pid, inodes in links.items()} == {pid: 3 for pid in children}
    print(f"\nsecurity: {len(procs)} processes, 0 inet and 0 listening sockets; links {links}")


@pytest.mark.timeout(60)
def test_a_program_a_child_runs_does_not_get_its_end(host):
    name = unique()
    bot = host({name: rtargets.ragent})
    # close_fds=False: what os.system, os.exec* and posix_spawn do with inheritable fds
    assert ask(name, "link_in_grandchild", timeout=30) is False
    # the host's end: a program the host runs does not get it either
    sock = bot.hub._peers[name].sock
    assert sock is not None and not sock.get_inheritable()
