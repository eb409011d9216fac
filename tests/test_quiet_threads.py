"""Stop signals reach the main thread: every thread liteyuki starts blocks SIGINT and SIGTERM."""

from __future__ import annotations

import pytest

from liteyuki.comm import get_channel

from . import delivery_targets as dt
from .conftest import unique


def _receive_masks(name: str) -> dict[str, tuple[bool, bool]]:
    inbox = get_channel(f"{name}-active")
    while True:
        message = inbox.receive(timeout=30)
        if isinstance(message, tuple) and message[0] == "masks":
            return message[1]


@pytest.mark.timeout(60)
def test_every_liteyuki_thread_of_a_child_blocks_the_stop_signals_and_its_main_thread_does_not(host):
    name = unique()
    host({name: (dt.asleep_on_main, (name, unique("k")))})
    masks = _receive_masks(name)
    assert masks.pop("MainThread") == (False, False)
    ours = {thread: mask for thread, mask in masks.items() if thread.startswith("liteyuki-")}
    assert any(thread.startswith("liteyuki-writer-") for thread in ours), masks  # the burst made one
    assert all(mask == (True, True) for mask in ours.values()), ours


@pytest.mark.timeout(60)
def test_every_liteyuki_thread_of_the_host_blocks_the_stop_signals(host):
    name = unique()
    host({name: (dt.asleep_on_main, (name, unique("k")))})
    _receive_masks(name)
    ours = {n: mask for n, mask in dt.signal_masks().items() if n.startswith("liteyuki-")}
    assert len(ours) >= 3, ours  # the host loop, the child's reader, its lane at least
    assert all(mask == (True, True) for mask in ours.values()), ours


@pytest.mark.timeout(40)
def test_a_child_asleep_on_its_main_thread_stops_on_the_stop_request_not_on_sigterm(host):
    # The stop request is a SIGINT the child sends itself. Were it taken by a thread other
    # than the sleeping main thread, the child would sleep on until the host's SIGTERM,
    # `grace` (60 s, past this test's timeout) later.
    name = unique()
    bot = host({name: (dt.asleep_on_main, (name, unique("k")))})
    _receive_masks(name)
    bot.process_manager.stop(name, grace=60)
    (status,) = [s for s in bot.process_manager.status() if s.name == name]
    assert (status.state, status.last_exit_code) == ("stopped", 0), status


@pytest.mark.timeout(60)
def test_a_plain_childs_dispatch_loop_is_made_on_its_own_thread_where_ctrl_c_cannot_cut_it_in_half(host):
    # Made on the main thread (the caller of the first on_receive), a Ctrl+C in the middle of
    # BaseEventLoop.__init__ left a half-made loop whose destructor printed a traceback.
    name = unique()
    host({name: (dt.loop_maker, (name,))})
    assert get_channel(f"{name}-active").receive(timeout=30) == ("made on", ["liteyuki-dispatch"])
