"""Bad input with real processes: garbage on the wire, huge and interleaved frames, values
that do not pickle or do not unpickle, wrong types, closed channels, unknown names."""

from __future__ import annotations

import hashlib
import re
import sys
import threading
import types

import pytest

from liteyuki.comm import (
    Channel,
    ChannelClosedError,
    ChannelNotFoundError,
    ChannelTypeError,
    MessageTooLargeError,
    SerializationError,
    get_channel,
    set_channel,
)
from liteyuki.comm.storage import shared_memory

from .. import targets
from ..conftest import unique
from ..test_channels import ask
from . import rtargets

# What the host's decoder says about each kind of garbage (see rtargets.GARBAGE).
PROTOCOL_ERRORS = {
    "random": "frame length 471568101 is out of range",
    "length": "frame length 4294967295 is out of range",
    "kind": "unknown frame kind 99",
    "utf8": "frame name is not UTF-8",
}


@pytest.mark.timeout(180)
def test_garbage_from_a_child_gets_it_killed_and_restarted_and_nobody_else_notices(start_host, capfd):
    names = {kind: unique(f"g{kind}") for kind in [*PROTOCOL_ERRORS, "truncated", "result", "request"]}
    flags = {kind: unique("flag") for kind in names}
    good = unique("good")
    restarted = {name: threading.Event() for name in names.values()}

    def setup(bot):
        bot.on_after_restart(lambda name: restarted[name].set() if name in restarted else None)

    children = {name: (rtargets.garbage, (kind, flags[kind])) for kind, name in names.items()}
    bot = start_host({good: targets.agent, **children}, setup=setup, restart_backoff=0.1)
    good_pid = ask(good, "pid")
    for kind in [*PROTOCOL_ERRORS, "truncated"]:
        assert restarted[names[kind]].wait(60), kind
        assert ask(names[kind], "pid", timeout=30) != shared_memory.get(flags[kind]), kind
    for kind in ("result", "request"):  # well-formed frames with nonsense in them: tolerated
        assert ask(names[kind], "pid") == shared_memory.get(flags[kind]), kind
        assert not restarted[names[kind]].is_set()
    assert ask(good, "pid") == good_pid and bot.process_manager._children[good].restarts == 0
    out = capfd.readouterr().out
    for kind, error in PROTOCOL_ERRORS.items():
        assert f"process '{names[kind]}' sent garbage ({error}); killing it, it will be restarted" in out
        assert f"process '{names[kind]}' exited unexpectedly (exit code -9); restarting in 0.1 s" in out
    # EOF inside a frame looks like any crash in the middle of a write: the exit decides.
    assert f"process '{names['truncated']}' exited unexpectedly (exit code 3); restarting in 0.1 s" in out
    assert f"process '{names['truncated']}' sent garbage" not in out
    assert f"child '{names['result']}' sent an unexpected RESULT frame; ignored" in out
    assert f"'{names['result']}' sent garbage" not in out and f"'{names['request']}' sent garbage" not in out


@pytest.mark.timeout(120)
def test_a_value_the_receiver_cannot_unpickle_is_logged_and_the_next_one_arrives(host, capfd):
    name, reader = unique(), unique()
    host({name: rtargets.ragent, reader: targets.agent})
    not_here = r"AttributeError\(\"Can't get attribute 'OnlyInChild' on <module 'tests.reliability.rtargets'"

    # child -> host, active receive: the bad message is logged and skipped
    active_chan = Channel(unique("bad-active"))
    set_channel(active_chan.name, active_chan)
    assert ask(name, "send_only_in_child", active_chan.name, "after-active") is not None
    assert active_chan.receive(timeout=10) == "after-active"

    # child -> host, passive callback: the same
    passive_chan = Channel(unique("bad-passive"))
    set_channel(passive_chan.name, passive_chan)
    got: list[object] = []
    arrived = threading.Event()
    passive_chan.on_receive()(lambda m: (got.append(m), arrived.set()))
    ask(name, "send_only_in_child", passive_chan.name, "after-passive")
    assert arrived.wait(10) and got == ["after-passive"]

    # publish: subscribers skip it, the next publish arrives
    topic = unique("topic")
    published: list[object] = []
    next_publish = threading.Event()
    shared_memory.on_subscriber_receive(topic)(lambda d: (published.append(d), next_publish.set()))
    ask(name, "publish_only_in_child", topic, "after-publish")
    assert next_publish.wait(10) and published == ["after-publish"]

    # the store keeps the bytes; whoever reads them learns
    key = unique("key")
    assert ask(name, "set_only_in_child", key) is None  # the sender cannot know
    with pytest.raises(SerializationError, match=rf"^shared_memory value cannot be unpickled here: {not_here}"):
        shared_memory.get(key)
    error = ask(reader, "get", key)
    assert isinstance(error, SerializationError) and re.match(r"^shared_memory value cannot be unpickled", str(error))
    with pytest.raises(SerializationError, match=rf"^shared_memory value of '{key}' cannot be unpickled here"):
        shared_memory.get_all()  # one poisoned key spoils the snapshot (a documented limit)
    shared_memory.delete(key)
    assert isinstance(shared_memory.get_all(), dict)

    # host -> child: a class the child cannot import; its dispatcher logs and goes on
    module = types.ModuleType("liteyuki_host_only")
    host_only = type("HostOnly", (), {"__module__": module.__name__})
    module.HostOnly = host_only
    sys.modules[module.__name__] = module
    try:
        get_channel(f"{reader}-passive").send(("echo", host_only()))
        assert ask(reader, "echo", "next") == "next"
    finally:
        del sys.modules[module.__name__]

    out = capfd.readouterr().out
    for chan in (active_chan.name, passive_chan.name):
        logged = rf"dropped a message on channel '{chan}'\n.*message on channel '{chan}' cannot be unpickled here: "
        assert re.search(logged + not_here, out, re.S)
    assert f"dropped a publish on '{topic}'" in out
    no_module = r"ModuleNotFoundError\(\"No module named 'liteyuki_host_only'"
    assert re.search(rf"dropped a message on channel '{reader}-passive'.*{no_module}", out, re.S)


MAX = 1 << 20


@pytest.mark.timeout(120)
def test_bad_values_and_calls_are_clear_typed_errors_at_the_caller(host):
    name = unique()
    host({name: rtargets.ragent}, max_message_size=MAX)
    chan = Channel(unique("plain"))
    set_channel(chan.name, chan)
    huge = 2 * MAX
    too_large = rf"is \d+ bytes pickled, above the maximum message size of {MAX}$"

    def child(*command: object) -> object:
        return ask(name, *command, timeout=20)

    # unpicklable values
    with pytest.raises(SerializationError, match=rf"^message on channel '{chan.name}' of type lock cannot be pickled"):
        chan.send(threading.Lock())
    error = child("send_lock", chan.name)
    assert isinstance(error, SerializationError)
    lock_error = rf"^message on channel '{chan.name}' of type lock cannot be pickled: cannot pickle '_thread.lock'"
    assert re.match(lock_error, str(error))
    with pytest.raises(SerializationError, match=r"^shared_memory value of type lock cannot be pickled"):
        shared_memory.set("k", threading.Lock())
    assert re.match(r"^shared_memory value of type lock cannot be pickled", str(child("set_lock", "k")))

    # above max_message_size: a clear error, nothing sent, and the stream goes on
    with pytest.raises(MessageTooLargeError, match=rf"^message on channel '{name}-passive' {too_large}"):
        get_channel(f"{name}-passive").send(b"x" * huge)
    assert child("echo", "next") == "next"
    error = child("send_bytes", chan.name, huge)
    assert isinstance(error, MessageTooLargeError)
    assert re.match(rf"^message on channel '{chan.name}' {too_large}", str(error))
    assert child("send_bytes", chan.name, 10) is None
    assert chan.receive(timeout=10) == b"x" * 10  # the small one after the refused one
    with pytest.raises(MessageTooLargeError, match=rf"^shared_memory value {too_large}"):
        shared_memory.set("k", b"x" * huge)
    assert re.match(rf"^shared_memory value {too_large}", str(child("set_bytes", "k", huge)))
    with pytest.raises(MessageTooLargeError, match=rf"^data published on 'topic' {too_large}"):
        shared_memory.publish("topic", b"x" * huge)

    # a store whose snapshot is larger than a message: get_all in a child is an error, not a crash
    for i in range(3):
        shared_memory.set(f"big{i}", b"x" * (MAX // 2))
    error = child("get_all")
    assert isinstance(error, MessageTooLargeError), error
    assert re.match(rf"^the answer to 'get_all' {too_large}", str(error))
    assert child("echo", "still connected") == "still connected"
    for i in range(3):
        shared_memory.delete(f"big{i}")

    # wrong types on a typed channel: refused at send, in the host and in a child
    typed = unique("typed")
    with pytest.raises(ChannelTypeError, match=rf"^channel '{typed}' carries int, got str: 'seven'$"):
        Channel[int](typed).send("seven")
    error = child("typed_send", typed, "seven")
    assert isinstance(error, ChannelTypeError) and str(error) == f"channel '{typed}' carries int, got str: 'seven'"

    # calls after close
    closed = Channel(unique("closed"))
    closed.close()
    with pytest.raises(ChannelClosedError, match=rf"^channel '{closed.name}' is closed$"):
        closed.send(1)
    with pytest.raises(ChannelClosedError, match=rf"^channel '{closed.name}' is closed$"):
        closed.receive(timeout=1)
    error = child("closed_send", unique("closed"))
    assert isinstance(error, ChannelClosedError) and re.match(r"^channel 'closed\w+' is closed$", str(error))

    # unknown names
    with pytest.raises(ChannelNotFoundError, match=r"^no channel named 'nowhere' \(known channels: .+\)$"):
        get_channel("nowhere")
    error = child("get_channel", "nowhere")
    assert isinstance(error, ChannelNotFoundError)
    assert re.match(r"^no channel named 'nowhere' \(known channels: ", str(error))

    # the store's own errors keep their type across the process boundary
    shared_memory.set("text", "not a number")
    error = child("incr", "text")
    assert type(error) is TypeError and str(error) == "shared_memory key 'text' holds str, not a number"
    with pytest.raises(TypeError, match=r"^shared_memory keys must be hashable, got list$"):
        shared_memory.set(["no"], 1)
    with pytest.raises(ValueError, match=r"^ttl must be a positive number of seconds or None, got -1$"):
        shared_memory.set("k", 1, ttl=-1)

    # a topic name longer than a frame can carry
    error = child("publish_long_topic", 70_000)
    assert type(error) is ValueError, repr(error)
    assert str(error) == f"channel must be at most 200 characters, got 70000: {'t' * 40!r}..."
    with pytest.raises(ValueError, match=r"^channel must be at most 200 characters, got 201"):
        shared_memory.on_subscriber_receive("t" * 201)
    assert child("echo", "end") == "end"


@pytest.mark.timeout(180)
def test_frames_larger_than_the_socket_buffer_from_many_threads_never_interleave(host):
    threads, count, size = 4, 3, 3 << 20  # 3 MiB frames; the socket buffers hold 2 MiB
    name = unique()
    bot = host({name: (rtargets.big_exchange, (threads, count, size))})
    passive, active = get_channel(f"{name}-passive"), get_channel(f"{name}-active")

    def send(tid: int) -> None:
        for i in range(count):
            data = rtargets.blob(100 + tid, i, size)
            passive.send((tid, i, hashlib.sha256(data).digest(), data))

    senders = [threading.Thread(target=send, args=(tid,)) for tid in range(threads)]
    for s in senders:
        s.start()
    last: dict[int, int] = {}
    verified = None
    received = 0
    while received < threads * count or verified is None:
        message = active.receive(timeout=60)
        if message[0] == "verified":
            verified = message
            continue
        tid, i, digest, data = message
        assert (
            len(data) == size
            and hashlib.sha256(data).digest() == digest == hashlib.sha256(rtargets.blob(tid, i, size)).digest()
        )
        assert last.get(tid, -1) == i - 1  # in order per sending thread
        last[tid] = i
        received += 1
    for s in senders:
        s.join()
    assert verified == ("verified", threads * count, [])  # the child's view of the host's frames
    pid = bot.process_manager.pid(name)
    for tid in range(threads):  # the store calls (written directly by the calling thread) too
        assert shared_memory.get(f"big-{pid}-{tid}") == (count - 1, rtargets.blob(tid, count - 1, size))
