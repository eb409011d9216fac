"""Faults with real processes: kill -9 a child or the host, a child that stops reading, Ctrl+C."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from liteyuki.comm import get_channel

from .. import targets
from ..conftest import unique
from ..test_channels import ask
from . import rtargets

TOTAL = 100_000
PAD = b"\0" * 1000  # ~1 KiB messages: the kernel socket buffers hold a few thousand, not the whole stream


@pytest.mark.timeout(120)
def test_kill_9_in_the_middle_of_a_100000_message_stream_loses_nothing(host):
    """At-least-once across a receiver's death: what the host handed the dead child and had
    not heard consumed goes to its successor, in order; nothing is lost."""
    sink, other = unique("sink"), unique("other")
    restarted = threading.Event()
    bot = host({sink: (rtargets.stream_sink, (TOTAL, 1000)), other: targets.agent}, restart_backoff=0.2)
    bot.on_after_restart(lambda n: restarted.set() if n == sink else None)
    passive, active = get_channel(f"{sink}-passive"), get_channel(f"{sink}-active")
    host_proc = psutil.Process()
    fds_before = host_proc.num_fds()

    sent = [0]
    pause, paused, resume = threading.Event(), threading.Event(), threading.Event()

    def send_range(start: int, stop: int) -> None:
        for seq in range(start, stop):
            if seq == 40_000:
                pause.wait(30)
                paused.set()
                resume.wait(30)
            passive.send((seq, PAD), timeout=30)
            sent[0] = seq + 1

    def stats() -> tuple[int, int]:
        (route,) = [s for s in bot.hub.channel_stats() if s["name"] == passive.name]
        unconsumed = sum(r["unconsumed"] for r in route["receivers"])
        return route["waiting"], unconsumed

    sender = threading.Thread(target=send_range, args=(0, TOTAL))
    sender.start()
    first = active.receive(timeout=20)
    assert first[0] == "first" and first[2] == 0
    old_pid = first[1]
    seq = -1
    while seq < 20_000:
        kind, pid, seq = active.receive(timeout=20)
        assert (kind, pid) == ("progress", old_pid)
    # Freeze the child, let the sender stop at 40,000, and read the host's books: what the
    # child was heard consuming is everything sent minus what waits and what it holds.
    os.kill(old_pid, signal.SIGSTOP)
    pause.set()
    assert paused.wait(30)
    before, settled = None, time.monotonic() + 10
    while (now := stats()) != before and time.monotonic() < settled:  # frames in flight land
        before = now
        time.sleep(0.2)
    waiting, unconsumed = now
    sent_at_kill = sent[0]
    heard_consumed = sent_at_kill - waiting - unconsumed  # messages 0 .. heard_consumed - 1
    os.kill(old_pid, signal.SIGKILL)
    _, alive = _wait_gone([old_pid], timeout=10)
    assert not alive
    assert ask(other, "echo", "still here") == "still here"  # the rest goes on meanwhile
    assert restarted.wait(30)
    resume.set()
    sender.join(120)
    reports = []
    while True:
        report = active.receive(timeout=60)
        reports.append(report)
        if report[0] == "done":
            break
    _, new_pid, first_new, count, in_order = reports[-1]
    print(
        f"\nkill -9 mid-stream: {sent_at_kill} sent at the kill, the host had heard 0..{heard_consumed - 1} consumed, "
        f"held {unconsumed} unconsumed by the child and {waiting} waiting; the new child got "
        f"{first_new}..{TOTAL - 1} ({count}, in order: {in_order})"
    )
    assert new_pid != old_pid
    assert first_new == heard_consumed, "the successor must start where the host last heard consumption"
    assert in_order and count == TOTAL - first_new
    assert ask(other, "echo", "after") == "after"
    assert host_proc.num_fds() <= fds_before  # no descriptor leaked (earlier tests may close some meanwhile)


@pytest.mark.timeout(60)
def test_a_child_reaped_by_someone_else_is_still_restarted(host, monkeypatch):
    # Code in the host that reaps children (os.waitpid(-1), psutil.Process.wait on a child,
    # a SIGCHLD handler) takes the exit status away from multiprocessing: the supervisor
    # then sees an exit code of None. Here the supervisor is made to lose that race.
    name = unique()
    restarted = threading.Event()
    bot = host({name: targets.agent}, restart_backoff=0.1)
    bot.on_after_restart(lambda n: restarted.set() if n == name else None)
    manager = bot.process_manager
    reaped = threading.Event()
    on_exit = manager._on_exit
    monkeypatch.setattr(manager, "_on_exit", lambda *run: (reaped.wait(10), on_exit(*run)))
    old_pid = ask(name, "pid")
    os.kill(old_pid, signal.SIGKILL)
    os.waitpid(old_pid, 0)  # somebody else reaps it first
    reaped.set()
    assert restarted.wait(30)
    new_pid = ask(name, "pid", timeout=20)
    assert new_pid != old_pid


# -- a host of its own: kill -9 of the host, Ctrl+C ----------------------------------------
ROOT = Path(__file__).resolve().parents[2]


class ScriptHost:
    """tests/reliability/rhost.py run as its own program, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.rhost", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: a killpg is our Ctrl+C
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self.pids: list[int] = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._cond:
                lines.append(line)
                if line.startswith("PIDS"):
                    self.pids = [int(p) for p in line.split()[1:]]
                self._cond.notify_all()
        with self._cond:
            lines.append("")  # end of stream
            self._cond.notify_all()

    def wait_for(self, *markers: str, timeout: float = 60) -> None:
        def seen() -> bool:
            return bool(self.pids) and all(any(line.startswith(m) for line in self.out) for m in markers)

        with self._cond:
            if not self._cond.wait_for(lambda: seen() or self.proc.poll() is not None, timeout) or not seen():
                raise AssertionError(f"host did not get ready: {''.join(self.out)}{''.join(self.err)}")

    def finish(self, timeout: float) -> None:
        """Wait for the host and for the end of its output (every child holds the pipe too)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with self._cond:
                raise AssertionError(f"host still running after {timeout} s: {''.join(self.out + self.err)}") from None
        for reader in self._readers:
            reader.join(timeout)

    def kill_leftovers(self) -> None:
        """SIGKILL whatever of ours is left: the host's process group (before the host is
        reaped, so its pid cannot have been reused), and the children it announced."""
        if self.proc.returncode is None:  # not reaped yet: the pid is still ours
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.pids:
            if psutil.pid_exists(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc.wait(10)


def _wait_gone(pids: list[int], timeout: float) -> tuple[dict[int, float], list[int]]:
    """Seconds until each process exited, and those still running after ``timeout``.

    A pidfd turns readable when its process exits (zombie or not: an orphan waits for
    init to reap it, which has nothing to do with us).
    """
    start = time.monotonic()
    took: dict[int, float] = {}
    poller = select.poll()
    fds: dict[int, int] = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:
            took[pid] = 0.0
    for fd in fds:
        poller.register(fd, select.POLLIN)
    try:
        while len(took) < len(pids):
            remaining = timeout - (time.monotonic() - start)
            if remaining <= 0:
                break
            for fd, _ in poller.poll(remaining * 1000):
                took[fds[fd]] = round(time.monotonic() - start, 2)
                poller.unregister(fd)
    finally:
        for fd in fds:
            os.close(fd)
    return took, [pid for pid in pids if pid not in took]


def _group_left(pgid: int, timeout: float) -> list[int]:
    """Processes of a process group (the host script's session: everything it started)
    still running after ``timeout`` s."""
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                members.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return _wait_gone(members, timeout)[1]


@pytest.mark.timeout(120)
def test_kill_9_of_the_host_every_child_exits_within_5_s():
    kinds = ["idle", "busy", "backpressured", "deaf", "stubborn"]
    host = ScriptHost("hostdeath")
    try:
        host.wait_for(*(f"STATE {kind}" for kind in kinds), "STATE deaf-full")
        os.kill(host.proc.pid, signal.SIGKILL)
        took, alive = _wait_gone(host.pids, timeout=5)
        seconds = {kind: took.get(pid) for kind, pid in zip(kinds, host.pids, strict=True)}
        print(f"\nhost kill -9: children gone after {seconds} s")
        assert not alive, f"children outlived their host by 5 s: {alive}"
        host.finish(5)
        # Each child learns it from the end of its link or from its parent's sentinel,
        # whichever comes first (with credit the deaf child's reader never waits, so it
        # sees the end of the stream too; the sentinel is what is left for a child whose
        # link says nothing). Under load either wins; both say why the child stopped.
        out = "".join(host.out)
        assert "stopping: the host process is gone" in out or "stopping: the host connection was lost" in out
        assert _group_left(host.proc.pid, timeout=5) == []  # multiprocessing's resource tracker too
    finally:
        host.kill_leftovers()


@pytest.mark.timeout(120)
def test_ctrl_c_during_heavy_traffic_with_4_children():
    host = ScriptHost("traffic", "4")
    try:
        launched = time.monotonic()
        host.wait_for(*["STATE traffic"] * 4, "STATE loaded")
        start = time.monotonic()
        print(f"\nloaded after {start - launched:.1f} s")
        os.killpg(host.proc.pid, signal.SIGINT)  # what a terminal does: the whole group
        host.finish(10)
        _, alive = _wait_gone(host.pids, timeout=max(0.1, 10 - (time.monotonic() - start)))
        elapsed = time.monotonic() - start
        out, err = "".join(host.out), "".join(host.err)
        print(f"\nCtrl+C under load: host exited {host.proc.returncode} after {elapsed:.2f} s")
        assert host.proc.returncode == 0, err
        assert "SHUTDOWN HOOK RAN" in out
        assert "Traceback" not in out + err, out + err
        assert not alive and elapsed < 10
        assert _group_left(host.proc.pid, timeout=5) == []
    finally:
        host.kill_leftovers()
