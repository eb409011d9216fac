"""Faults with real processes: kill -9 a child or the host, a child that stops reading, Ctrl+C."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from liteyuki.comm import get_channel
from liteyuki.comm._wire import FrameDecoder, loads

from .. import targets
from ..conftest import unique
from ..test_channels import ask
from . import rtargets

TOTAL = 100_000
PAD = b"\0" * 1000  # ~1 KiB messages: the kernel socket buffers hold a few thousand, not the whole stream


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
    frozen, past_40k = threading.Event(), threading.Event()

    def send_range(start: int, stop: int) -> None:
        for seq in range(start, stop):
            if seq == 30_000:
                assert frozen.wait(30)
            elif seq == 40_000:
                past_40k.set()
            passive.send((seq, PAD))
            sent[0] = seq + 1

    phase_ab = threading.Thread(target=send_range, args=(0, 70_000))
    phase_ab.start()
    first = active.receive(timeout=20)
    assert first[0] == "first" and first[2] == 0
    old_pid = first[1]
    last_reported = 0
    while last_reported < 20_000:
        kind, pid, seq = active.receive(timeout=20)
        assert (kind, pid) == ("progress", old_pid)
        last_reported = seq
    # Freeze the child so that the kernel buffers fill and what follows stays in the host's
    # outbox: the snapshot below is then exact. The sender goes on sending through the kill.
    os.kill(old_pid, signal.SIGSTOP)
    frozen.set()
    assert past_40k.wait(30)
    with outbox._cond:
        queued = list(outbox._frames)
        sent_at_kill = sent[0]
    os.kill(old_pid, signal.SIGKILL)
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
    print(
        f"\nkill -9 mid-stream: old child reported up to {last_reported}, outbox held {len(queued)} frames "
        f"({sum(map(len, queued))} bytes) from seq {first_queued} at the kill, {sent_at_kill} sent by then, "
        f"{sent_before_restart} sent before the restart; new child got {first_new}..{TOTAL - 1} "
        f"({count} messages, in order: {in_order}); lost at most {first_new - last_reported - 1}"
    )
    assert new_pid != old_pid and new_first[2] == first_new
    assert in_order and count == TOTAL - first_new
    assert first_new <= first_queued, "messages still queued in the host outbox at the kill were lost"
    assert ask(other, "echo", "after") == "after"
    assert host_proc.num_fds() == fds_before
