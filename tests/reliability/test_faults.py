"""Faults with real processes: kill -9 a child or the host, a child that stops reading, Ctrl+C."""

from __future__ import annotations

import asyncio
import os
import re
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

from liteyuki.comm import ChannelFullError, get_channel
from liteyuki.comm._wire import FrameDecoder, Kind, dumps, encode, loads
from liteyuki.log import logger

from .. import targets
from ..conftest import unique
from ..test_channels import ask
from . import rtargets

TOTAL = 100_000
PAD = b"\0" * 1000  # ~1 KiB messages: the kernel socket buffers hold a few thousand, not the whole stream


def _frame_size(channel: str, seq: int) -> int:
    return len(encode(Kind.MESSAGE, channel, dumps((seq, PAD))))


def _seq_of(frame: bytes) -> int:
    (decoded,) = FrameDecoder().feed(frame)
    return loads(decoded.payload)[0]


@pytest.mark.timeout(120)
def test_kill_9_in_the_middle_of_a_100000_message_stream(host):
    sink, other = unique("sink"), unique("other")
    restarted = threading.Event()
    bot = host({sink: (rtargets.stream_sink, (TOTAL, 1000)), other: targets.agent}, restart_backoff=0.2)
    bot.on_after_restart(lambda n: restarted.set() if n == sink else None)
    passive, active = get_channel(f"{sink}-passive"), get_channel(f"{sink}-active")
    outbox = bot.hub.peer_outbox(sink)
    host_proc = psutil.Process()
    fds_before = host_proc.num_fds()

    sent = [0]
    frozen, past_50k = threading.Event(), threading.Event()

    def send_range(start: int, stop: int) -> None:
        for seq in range(start, stop):
            if seq == 30_000:
                assert frozen.wait(30)
            elif seq == 50_000:
                past_50k.set()
            passive.send((seq, PAD))
            sent[0] = seq + 1

    def progress_to(at_least: int) -> int:
        seq = -1
        while seq < at_least:
            kind, pid, seq = active.receive(timeout=20)
            assert (kind, pid) == ("progress", old_pid)
        return seq

    phase_ab = threading.Thread(target=send_range, args=(0, 70_000))
    phase_ab.start()
    first = active.receive(timeout=20)
    assert first[0] == "first" and first[2] == 0
    old_pid = first[1]
    progress_to(20_000)
    # A stall: the child stops reading while 20,000 more messages (~20 MB) are sent.
    os.kill(old_pid, signal.SIGSTOP)
    frozen.set()
    assert past_50k.wait(30)
    # It reads again for a while (the host's writer takes its next batches), then freezes
    # again and dies, while the outbox is held still: the snapshot below is exact. The sender
    # goes on sending through the kill and the restart.
    os.kill(old_pid, signal.SIGCONT)
    last_reported = progress_to(30_000)
    os.kill(old_pid, signal.SIGSTOP)
    with outbox._cond:  # the writer takes no new batch meanwhile, nobody queues
        queued = list(outbox._frames)
        sent_at_kill = sent[0]
        os.kill(old_pid, signal.SIGKILL)
        _, alive = _wait_gone([old_pid], timeout=10)  # dead: its socket is closed now
        assert not alive
    first_queued = _seq_of(queued[0]) if queued else sent_at_kill
    # the other child and the host keep working while the sink is down
    assert ask(other, "echo", "still here") == "still here"
    phase_ab.join(60)
    assert restarted.wait(30)
    sent_before_restart = sent[0]
    send_range(70_000, TOTAL)  # phase C: after the restart
    reports = []
    while True:
        report = active.receive(timeout=60)
        reports.append(report)
        if report[0] == "done":
            break
    new_first = next(r for r in reports if r[0] == "first" and r[1] != old_pid)
    _, new_pid, first_new, count, in_order = reports[-1]
    lost = first_new - last_reported - 1
    print(
        f"\nkill -9 mid-stream: the old child had handled at least 0..{last_reported}; at the kill "
        f"{sent_at_kill} were sent and the host outbox held {len(queued)} frames ({sum(map(len, queued))} bytes) "
        f"from {first_queued} on; {sent_before_restart - sent_at_kill} more were sent while it was down; "
        f"the new child got {first_new}..{TOTAL - 1} ({count}, in order: {in_order}); "
        f"lost at most {lost} ({lost * _frame_size(passive.name, first_new)} bytes)"
    )
    assert new_pid != old_pid and new_first[2] == first_new
    assert in_order and count == TOTAL - first_new
    assert first_new <= first_queued, "messages still queued in the host outbox at the kill were lost"
    assert ask(other, "echo", "after") == "after"
    assert host_proc.num_fds() == fds_before


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
        # The deaf child's reader is stuck delivering, it never sees the end of the stream:
        # it stopped because the parent's sentinel said the host is gone.
        assert "stopping: the host process is gone" in "".join(host.out)
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


@pytest.mark.timeout(120)
def test_a_child_that_stops_reading_bounds_the_outbox_and_senders_get_channel_full(host):
    stalled, other = unique("stalled"), unique("other")
    limit, wait = 1 << 20, 0.5
    bot = host({stalled: targets.agent, other: targets.agent}, outbox_limit=limit, send_timeout=wait)
    stalled_pid = ask(stalled, "pid")
    passive, active = get_channel(f"{stalled}-passive"), get_channel(f"{stalled}-active")
    outbox = bot.hub.peer_outbox(stalled)
    me = psutil.Process()
    pad = "p" * 10_000
    full = rf"^channel '{stalled}-passive' to '{stalled}' is full \(\d+ bytes queued, limit {limit}\)$"
    errors: list[str] = []  # the host's error log
    sink = logger.add(lambda line: errors.append(str(line)), level="ERROR", format="{message}")
    os.kill(stalled_pid, signal.SIGSTOP)
    try:
        rss_before = me.memory_info().rss
        # A non-loop thread: sends are accepted until the outbox is full, then one waits
        # send_timeout and fails; nothing of it is queued.
        accepted = 0
        while True:
            started = time.monotonic()
            try:
                passive.send(("echo", (accepted, pad)))
            except ChannelFullError as exc:
                waited = time.monotonic() - started
                assert re.match(full, str(exc)), str(exc)
                break
            accepted += 1
        assert wait <= waited < wait + 2.0
        assert outbox.queued_bytes <= limit
        started = time.monotonic()
        with pytest.raises(ChannelFullError, match=full):
            passive.send(("echo", (-1, pad)), timeout=0.1)
        assert 0.1 <= time.monotonic() - started < 2.0

        # The event loop never waits: 2,000 attempts (20 MB) fail at once, and nothing piles up.
        async def on_the_loop() -> tuple[int, float]:
            failures, slowest = 0, 0.0
            for _ in range(2_000):
                t = time.monotonic()
                try:
                    passive.send(("echo", (-1, pad)))
                except ChannelFullError:
                    failures += 1
                slowest = max(slowest, time.monotonic() - t)
            return failures, slowest

        failures, slowest = asyncio.run_coroutine_threadsafe(on_the_loop(), bot.loop).result(60)
        assert failures == 2_000 and slowest < 0.5
        rss_after = me.memory_info().rss

        # A child's message to the stalled child that does not fit: the host holds it for
        # send_timeout, then drops it with an error in its log; the sending child is not told
        # (its send had returned once the message was in its own outbox).
        assert ask(other, "send_on", f"{stalled}-passive", ("echo", (-2, pad * 2))) is None
        # The host and the other child go on working meanwhile.
        assert ask(other, "echo", "still here") == "still here"
        print(
            f"\nstalled child: {accepted} x 10 kB accepted, outbox {outbox.queued_bytes} bytes (limit {limit}), "
            f"a thread waited {waited:.2f} s (send_timeout {wait}), the loop at most {slowest * 1000:.1f} ms; "
            f"host RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB after 20 MB refused"
        )
        assert rss_after - rss_before < 16 * 2**20
    finally:
        os.kill(stalled_pid, signal.SIGCONT)
        logger.remove(sink)
    # Everything that was accepted arrives, in order.
    got = [active.receive(timeout=30) for _ in range(accepted)]
    assert [g[0] for g in got] == list(range(accepted)) and all(g[1] == pad for g in got)
    assert ask(stalled, "echo", "back") == "back"
    dropped = rf"^dropped 1 message\(s\) from '{other}' on '{stalled}-passive': channel '{stalled}-passive' to"
    assert [line for line in errors if re.match(dropped, line)], errors
