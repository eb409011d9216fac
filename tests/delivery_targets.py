"""Spawn targets for the delivery tests (tests/test_delivery.py)."""

from __future__ import annotations

import ast
import os
import signal
import socket
import threading
import time
from typing import Any

from liteyuki.comm import Channel, CommTimeoutError, active_channel, get_channel, lowlevel, passive_channel
from liteyuki.comm.storage import shared_memory


def hol_agent(buffer: int, n: int) -> None:
    """A passive callback that makes a sync store call per message, on an end of ``buffer``
    messages that the host keeps full: the store answers must still come."""
    Channel(passive_channel.name, buffer_size=buffer)
    state = {"count": 0, "slowest": 0.0, "errors": 0}

    @passive_channel.on_receive()
    def on_message(i: int) -> None:
        started = time.monotonic()
        try:
            shared_memory.get("hol-key", timeout=5)
        except CommTimeoutError:
            state["errors"] += 1
        state["slowest"] = max(state["slowest"], time.monotonic() - started)
        state["count"] += 1
        if state["count"] == n:
            active_channel.send(("done", state["count"], state["errors"], state["slowest"]))

    threading.Event().wait()


def shared_receiver(name: str, report: str) -> None:
    """Receives on the shared channel ``name`` and sends (pid, message) for each to ``report``."""
    out = get_channel(report)
    for message in get_channel(name):
        out.send((os.getpid(), message))


def burst_sender(name: str, start: int, count: int) -> None:
    """Sends ``count`` numbered messages on ``name`` when told to (on its passive channel), then says so."""

    @passive_channel.on_receive()
    def on_command(cmd: Any) -> None:
        if cmd == "go":
            chan = get_channel(name)
            for i in range(start, start + count):
                chan.send(i)
            active_channel.send(("sent", os.getpid()))

    threading.Event().wait()


def bursts_to_each(names: list[str], count: int) -> None:
    """On "go": sends 0..count-1 on each of ``names`` in turn, then says so."""

    @passive_channel.on_receive()
    def on_command(cmd: Any) -> None:
        channels = [get_channel(name) for name in names]
        for i in range(count):
            for chan in channels:
                chan.send(i)
        active_channel.send(("sent", os.getpid()))

    threading.Event().wait()


def closing_receiver(name: str, report: str, take: int) -> None:
    """Receives ``take`` messages on ``name`` (reporting them), then closes its end while more
    are buffered, and says so."""
    chan, out = get_channel(name), get_channel(report)
    for _ in range(take):
        out.send((os.getpid(), chan.receive(timeout=30)))
    held = len(chan._state.buffer)
    chan.close()
    out.send(("closed", os.getpid(), held))
    threading.Event().wait()


def send_past_the_limit(name: str, n: int, timeout: float) -> None:
    """Sends up to ``n`` messages on ``name``; reports how many were accepted and the error."""
    chan = Channel(name)  # not registered by anyone: messages wait in the host
    accepted, error = 0, None
    for i in range(n):
        try:
            chan.send(i, timeout=timeout)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        accepted += 1
    active_channel.send(("accepted", accepted, error))
    threading.Event().wait()


def burst_and_return(n: int) -> None:
    """Sends ``n`` messages as fast as it can and returns: a clean exit right after."""
    for i in range(n):
        active_channel.send(i)


def link_breaker(once: str) -> None:
    """Answers 'pid'; on 'break' (the first incarnation only: the message is delivered again
    to its successor, which never heard it consumed) shuts its own link down and keeps running."""

    @passive_channel.on_receive()
    def on_command(cmd: Any) -> None:
        if cmd in ("pid", ("pid",)):
            active_channel.send(os.getpid())
        elif cmd == "break" and shared_memory.compare_and_set(once, None, os.getpid()):
            lowlevel.current()._sock.shutdown(socket.SHUT_RDWR)

    threading.Event().wait()


def burst_on_request(n: int) -> None:
    """On any message: sends ``n`` messages back in one burst."""

    @passive_channel.on_receive()
    def on_command(cmd: Any) -> None:
        for i in range(n):
            active_channel.send(i)

    threading.Event().wait()


def model_receiver(name: str) -> None:
    """Receives on the shared channel ``name`` on command, for the model test.

    ("recv", k) -> up to k messages (each taken within 0.2 s); ("drain",) -> everything
    until the end stays empty for 0.3 s; ("close",) -> close the end. Replies on the active
    channel with (pid, list of messages) or (pid, "closed", messages taken before).
    """
    chan = get_channel(name)

    def take(k: int, wait: float) -> list[int]:
        got: list[int] = []
        while len(got) < k:
            try:
                got.append(chan.receive(timeout=wait))
            except CommTimeoutError:
                break
        return got

    carry = take(1, 0.001)  # declares the end at once (receive mode); keeps what it took
    for cmd in passive_channel:
        if cmd[0] == "recv":
            got, carry = carry + take(cmd[1] - len(carry), 0.2), []
            active_channel.send((os.getpid(), got))
        elif cmd[0] == "drain":
            got, carry = carry + ([] if chan.closed else take(1 << 30, 0.3)), []
            active_channel.send((os.getpid(), got))
        elif cmd[0] == "close":
            chan.close()
            active_channel.send((os.getpid(), "closed", carry))
            carry = []


def lane_agent() -> None:
    """Commands for the lane tests, answered on the active channel."""

    def lane_inode() -> int:
        return os.fstat(lowlevel.current()._lanes._local.lane.sock.fileno()).st_ino

    def fork_and_get(key: str) -> tuple[Any, Any, bool]:
        """What a forked grandchild reads, what this process reads after it, and whether the
        grandchild read on a lane of its own (not the one this thread made before the fork)."""
        shared_memory.get(key)
        ours = lane_inode()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.write(write, repr((shared_memory.get(key), lane_inode())).encode())
            finally:
                os._exit(0)
        os.close(write)
        got, theirs = ast.literal_eval(os.read(read, 1000).decode())
        os.close(read)
        os.waitpid(pid, 0)
        return got, shared_memory.get(key), theirs != ours

    def threads(key: str, n: int) -> tuple[list[Any], int]:
        results: list[Any] = []
        for _ in range(n):  # one after another: each thread's lane ends with it
            t = threading.Thread(target=lambda: results.append(shared_memory.get(key)))
            t.start()
            t.join()
        import gc

        gc.collect()
        return results, lowlevel.current()._lanes.count

    def raw_requests(key: str, limit: int) -> list[tuple[str, str]]:
        """Hand-made requests on this thread's lane, as a foreign sender could write them:
        (kind, what the answer unpickles to) for each, then a normal call on the same lane."""
        import pickle

        from liteyuki.comm._wire import Kind

        lanes = lowlevel.current()._lanes
        payloads = [
            ("Get", pickle.dumps((key,))),  # well formed
            ("Get", pickle.dumps((key, "extra"))),  # one field too many
            ("Get", pickle.dumps(())),
            ("Get", pickle.dumps([key])),  # a list, not a tuple
            ("Get", pickle.dumps(([1, 2],))),  # an unhashable key
            ("Get", b"not a pickle"),
            ("Nope", pickle.dumps((key,))),
            ("Set", pickle.dumps((key, pickle.dumps("set"), None))),  # well formed
            ("Get", pickle.dumps((key,))),
            ("Set", pickle.dumps((key, pickle.dumps("two fields")))),  # the ttl left out
            ("Set", pickle.dumps((key, pickle.dumps("x"), -1))),  # a bad ttl
            ("Set", pickle.dumps(([1], pickle.dumps("x"), None))),  # an unhashable key
            ("Set", pickle.dumps((key, b"x" * (limit + 1), None))),  # above the maximum message size
            ("Get", pickle.dumps((b"k" * (limit + 1),))),  # a bytes key above it
            ("Set", pickle.dumps((b"k" * (limit + 1), pickle.dumps("x"), None))),
        ]
        out = []
        for op_name, payload in payloads:
            kind, raw = lanes.call(op_name, payload, 10)
            value = pickle.loads(raw) if raw else None  # the stored pickle, or the error
            out.append((kind.name, repr(value) if kind is Kind.RESULT else type(value).__name__))
        out.append(("after", repr(shared_memory.get(key))))
        return out

    commands = {"fork_and_get": fork_and_get, "threads": threads, "raw_requests": raw_requests}

    @passive_channel.on_receive()
    async def on_command(cmd: Any) -> None:
        op, *args = cmd
        if op == "fence":  # an async set queued on the main link, then a sync get on a lane
            key, rounds = args
            stale = 0
            for i in range(rounds):
                import asyncio

                task = asyncio.ensure_future(shared_memory.async_set(key, i))
                await asyncio.sleep(0)  # the set's frame is queued on the main link now
                if shared_memory.get(key) != i:
                    stale += 1
                await task
            active_channel.send(("fence", stale))
            return
        result = await __import__("asyncio").to_thread(commands[op], *args)
        active_channel.send(result)

    threading.Event().wait()


def interrupted_calls(key: str, rounds: int) -> None:
    """Sync store calls on the main thread while SIGINT (Ctrl+C) lands at varying moments:
    each interrupted lane is dropped, and the next call works. Reports (interrupts, value)."""
    import signal

    interrupts = 0
    for i in range(rounds):
        timer = threading.Timer(0.0002 + 0.0005 * (i % 7), lambda: os.kill(os.getpid(), signal.SIGINT))
        try:
            timer.start()
            for _ in range(50):
                shared_memory.get(key)
            timer.join()
        except KeyboardInterrupt:
            interrupts += 1
        while timer.is_alive() or not timer.finished.is_set():
            try:
                timer.join()  # a SIGINT that comes after the calls lands here
            except KeyboardInterrupt:
                interrupts += 1
    active_channel.send((interrupts, shared_memory.get(key)))
    threading.Event().wait()


def signal_masks() -> dict[str, tuple[bool, bool]]:
    """{thread name: (SIGINT blocked, SIGTERM blocked)} for every thread of this process."""
    masks = {}
    for thread in threading.enumerate():
        with open(f"/proc/self/task/{thread.native_id}/status") as status:
            blocked = int(next(line for line in status if line.startswith("SigBlk:")).split()[1], 16)
        masks[thread.name] = (bool(blocked >> (signal.SIGINT - 1) & 1), bool(blocked >> (signal.SIGTERM - 1) & 1))
    return masks


def asleep_on_main(name: str, key: str) -> None:
    """Start every kind of thread a child may have, report their signal masks, then sleep
    on the main thread in a call only a signal can interrupt."""
    shared_memory.set(key, 1)
    threading.Thread(target=shared_memory.get, args=(key,)).start()  # a lane from another thread
    out = get_channel(f"{name}-active")
    for i in range(20000):  # a burst: the writer's backstop thread takes over
        out.send(i)
    out.send(("masks", signal_masks()))
    threading.Event().wait()


def lane_hammer(name: str, key: str, threads: int) -> None:
    """``threads`` threads call ``shared_memory.get`` in a loop (more than the lane cap: some
    go over the main link) while the passive channel echoes; ``"stop"`` reports per-thread counts."""
    stop = threading.Event()
    counts = [0] * threads
    out = get_channel(f"{name}-active")

    def hammer(i: int) -> None:
        while not stop.is_set():
            shared_memory.get(key)
            counts[i] += 1

    workers = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()

    @passive_channel.on_receive()
    def on_command(cmd: Any) -> None:
        if cmd == "stop":
            stop.set()
            for worker in workers:
                worker.join(10)
            out.send(("counts", counts))
        else:
            out.send(cmd)

    threading.Event().wait()


def slow_sink(name: str, n: int) -> None:
    """Takes ``n`` messages, a few ms of C work each that holds the GIL (so its reader
    thread reads slowly, but steadily), then says "done"."""
    seen = [0]

    @passive_channel.on_receive()
    def on_message(message: Any) -> None:
        sum(range(200_000))  # busy work in C: no bytecode boundary to hand the GIL over at
        seen[0] += 1
        if seen[0] == n:
            get_channel(f"{name}-active").send("done")

    get_channel(f"{name}-active").send("ready")
    threading.Event().wait()


def stuck_sink(name: str) -> None:
    """Its first callback holds the GIL for good: the child stops reading its link."""

    @passive_channel.on_receive()
    def on_message(message: Any) -> None:
        while True:
            sum(range(10**9))  # C work that never hands the GIL over: nothing else runs

    get_channel(f"{name}-active").send("ready")
    threading.Event().wait()


def loop_lane_agent(name: str) -> None:
    """Commands for the loop-lane tests, run on the child's dispatch loop."""
    import asyncio

    from liteyuki.comm import lowlevel

    out = get_channel(f"{name}-active")
    released = threading.Event()

    def lane_count() -> int:
        return lowlevel.current()._lanes.count

    @passive_channel.on_receive()
    async def on_command(cmd: Any) -> None:
        op, *args = cmd
        if op == "gather":  # many calls at once on the loop: all answered, on one lane
            (key, n) = args
            before = lane_count()
            values = await asyncio.gather(*(shared_memory.async_get(key) for _ in range(n)))
            await asyncio.gather(*(shared_memory.async_set(f"{key}-{i}", i) for i in range(n)))
            out.send(("gather", values, [shared_memory.get(f"{key}-{i}") for i in range(n)], lane_count() - before))
        elif op == "cancel":  # a call cancelled while it waits leaves the lane in step
            (key,) = args
            task = asyncio.ensure_future(shared_memory.async_get(key))
            await asyncio.sleep(0)
            task.cancel()
            cancelled = False
            try:
                await task
            except asyncio.CancelledError:
                cancelled = True
            out.send(("cancel", cancelled, await shared_memory.async_get(key), shared_memory.get(key)))
        elif op == "runs":  # a fresh loop per call (asyncio.run in a thread): lanes do not pile up
            (key, n) = args

            def runs() -> list[Any]:
                return [asyncio.run(shared_memory.async_get(key)) for _ in range(n)]

            values = await asyncio.to_thread(runs)
            out.send(("runs", values, lane_count()))
        elif op == "timeouts":  # the host answers nothing: each call times out at its own deadline
            (key, limits) = args
            loop = asyncio.get_running_loop()

            async def timed(limit: float) -> tuple[str, float, bool]:
                start = loop.time()
                try:
                    await shared_memory.async_get(key, timeout=limit)
                except CommTimeoutError as exc:
                    elapsed = loop.time() - start
                    return "timeout", limit, limit <= elapsed < limit + 2.0 and f"within {limit} s" in str(exc)
                return "answered", limit, False

            out.send(("timeouts", await asyncio.gather(*(timed(limit) for limit in limits))))
        elif op == "get":
            (key,) = args
            out.send(("get", await shared_memory.async_get(key, timeout=10)))
        elif op == "block":  # the loop is blocked: another thread's calls and messages go on
            (key,) = args
            await shared_memory.async_get(key)  # the loop has its lane now

            def other() -> None:
                shared_memory.set(key, "from another thread")
                out.send(("other", shared_memory.get(key)))
                released.set()

            threading.Thread(target=other).start()
            out.send(("blocked", released.wait(20)))  # blocks the loop until the other thread is done

    out.send("ready")
    threading.Event().wait()


def uvloop_calls(name: str, key: str) -> None:
    """Async storage calls on a uvloop loop (NoneBot's servers run on one when it is installed)."""
    import asyncio

    import uvloop

    async def main() -> tuple[Any, ...]:
        one = await shared_memory.async_get(key)
        many = await asyncio.gather(*(shared_memory.async_incr(f"{key}-n") for _ in range(200)))
        await shared_memory.async_set(f"{key}-s", "set on uvloop")
        return one, sorted(many) == list(range(1, 201)), shared_memory.get(f"{key}-s")

    get_channel(f"{name}-active").send(uvloop.run(main()))
    threading.Event().wait()


def loop_maker(name: str) -> None:
    """Reports on which thread its dispatch loop was made: the first on_receive makes it."""
    import asyncio

    made_on: list[str] = []

    class Recording(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            made_on.append(threading.current_thread().name)
            return super().new_event_loop()

    asyncio.set_event_loop_policy(Recording())
    passive_channel.on_receive()(lambda message: None)
    get_channel(f"{name}-active").send(("made on", made_on))
    threading.Event().wait()


def numbered_sender() -> None:
    """On ("send", name, start, count, last): sends ``start .. start+count-1`` on ``name``, then
    ``last`` unless it is None."""

    @passive_channel.on_receive()
    def on_command(cmd: Any) -> None:
        _, name, start, count, last = cmd
        chan = get_channel(name)
        for i in range(start, start + count):
            chan.send(i)
        if last is not None:
            chan.send(last)

    threading.Event().wait()


def sender_closed_while_waiting(name: str) -> None:
    """Fills ``name``'s pending window (nobody receives), blocks a send in a thread, closes
    the end under it, and reports what the blocked send raised and how long it took."""
    chan = Channel(name)
    window = lowlevel.current().window
    for i in range(window):
        chan.send(i)
    outcome: list[Any] = []

    def blocked() -> None:
        t0 = time.monotonic()
        try:
            chan.send("blocked", timeout=30)
            outcome.append(("sent", time.monotonic() - t0))
        except Exception as exc:
            outcome.append((type(exc).__name__, time.monotonic() - t0))

    worker = threading.Thread(target=blocked)
    worker.start()
    credit = lowlevel.current()._credits[name]
    deadline = time.monotonic() + 10
    while not credit._sync_waiters and time.monotonic() < deadline:
        time.sleep(0.005)  # polling a real condition (the send is waiting) with a deadline
    chan.close()
    worker.join(30)
    active_channel.send(outcome[0] if outcome else ("still blocked", 30.0))
    threading.Event().wait()


def recreating_receiver(name: str, report: str, rounds: int, take: int) -> None:
    """Receives ``take`` messages on ``name``, closes its end and makes a new one at once,
    ``rounds`` times; reports each round's messages, then ("done", pid)."""
    out = Channel(report)
    for _ in range(rounds):
        end = Channel(name)
        out.send(("batch", [end.receive(timeout=30) for _ in range(take)]))
        end.close()
    out.send(("done", os.getpid()))
    threading.Event().wait()


def slow_passive(report: str, is_async: bool = False, busy: bool = False, log: str | None = None) -> None:
    """Each message takes ~2 ms of work in a passive callback (an ``async def`` one with
    ``is_async``; work that holds the GIL with ``busy``) and is reported on ``report`` (and
    appended to the file ``log``, which a run cut off from its host still reaches);
    "block" hangs its callback (the test then kills this process)."""
    import asyncio

    out = get_channel(report)
    written = open(log, "a", buffering=1) if log else None  # noqa: SIM115 (open for the process's life)

    def work(message: Any) -> None:
        if message == "block":
            out.send(("blocked", os.getpid()))
            threading.Event().wait()
        if busy:
            until = time.perf_counter() + 0.002
            while time.perf_counter() < until:
                pass
        else:
            time.sleep(0.002)  # the work a slow callback does (not a synchronisation)
        if written is not None:
            written.write(f"{message}\n")
        out.send(("done", message))

    async def async_work(message: Any) -> None:
        if message == "block":
            work(message)
        await asyncio.sleep(0)
        work(message)

    passive_channel.on_receive()(async_work if is_async else work)
    threading.Event().wait()


async def slow_passive_on_its_loop(report: str, is_async: bool, busy: bool, log: str) -> None:
    """``slow_passive`` in a child whose target is ``async def``: its callbacks run on the
    target's loop, where a stop lands."""
    import asyncio

    # (slow_passive registers the callback and then blocks: in a thread, so the loop runs on)
    threading.Thread(target=slow_passive, args=(report, is_async, busy, log), daemon=True).start()
    await asyncio.Event().wait()


async def busy_on_its_loop(report: str) -> None:
    """An ``async def`` target whose sync passive callback holds its loop ~20 ms per message,
    then echoes the message on ``report``."""
    import asyncio

    out = get_channel(report)

    def work(message: Any) -> None:
        until = time.perf_counter() + 0.02
        while time.perf_counter() < until:
            pass
        out.send(message)

    passive_channel.on_receive()(work)
    await asyncio.Event().wait()


def floods_and_dies(sink: str, size: int, log: str) -> None:
    """A thread floods ``sink`` with ``size``-byte messages; the passive callback appends each
    message to the file ``log`` and exits at once (os._exit) on "die". (A file, not the store:
    a store call waits for what this process sent before it, and would flush the link.)"""
    flood = get_channel(sink)

    def send_forever() -> None:
        while True:
            flood.send(b"x" * size, timeout=60)

    @passive_channel.on_receive()
    def work(message: Any) -> None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{message}\n".encode())
        os.close(fd)
        if message == "die":
            os._exit(3)
        flood.send(("pong",), timeout=60)

    threading.Thread(target=send_forever, daemon=True).start()
    threading.Event().wait()


def closes_and_dies(report: str) -> None:
    """Reports each message on ``report``; at "die" it closes its passive end and exits at once
    (os._exit: no clean-up, no flush at exit)."""
    out = get_channel(report)

    @passive_channel.on_receive()
    def work(message: Any) -> None:
        if message == "die":
            passive_channel.close()
            os._exit(3)
        out.send(("done", message))

    threading.Event().wait()


def sends_closes_and_dies(report: str, count: int, size: int, closes: str) -> None:
    """On "go": sends ``count`` messages of ``size`` bytes on ``report`` (the writer holds
    megabytes of them), closes its passive end (``closes`` "passive") or the end it sent
    on ("sender"), and exits at once (os._exit)."""
    out = get_channel(report)

    @passive_channel.on_receive()
    def work(message: Any) -> None:
        for i in range(count):
            out.send((i, b"x" * size), timeout=30)
        (passive_channel if closes == "passive" else out).close()
        os._exit(3)

    threading.Event().wait()


def lanes_over_the_cap(name: str, key: str, threads: int, calls: int) -> None:
    """``threads`` threads (more than the lane cap), thread ``i`` making ``calls + i``
    ``shared_memory.incr`` (so they end one by one); those over the cap take the lanes of
    those that end. Reports (successful calls, the number of failed ones, the first few)."""
    ok = [0] * threads
    errors: list[str] = []

    def work(i: int) -> None:
        for _ in range(calls + i):
            try:
                shared_memory.incr(key)
            except Exception as exc:  # every failure is counted, the thread goes on
                errors.append(f"{type(exc).__name__}: {exc}")
            else:
                ok[i] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    get_channel(f"{name}-active").send((sum(ok), len(errors), errors[:3]))
    threading.Event().wait()


def calls_on_refused_lanes(name: str, key: str) -> None:
    """Sync calls, and async ones gathered on a loop, in a child whose host refuses every
    lane: reports what they read and the lanes this process still counts."""
    import asyncio

    async def on_a_loop() -> list[Any]:
        await asyncio.gather(*(shared_memory.async_incr(key) for _ in range(20)))
        return await asyncio.gather(*(shared_memory.async_get(key) for _ in range(5)))

    try:
        shared_memory.set(key, 0)
        synced = [shared_memory.incr(key) for _ in range(5)]
        got = asyncio.run(on_a_loop())
        report: Any = (synced, got, shared_memory.get(key), lowlevel.current()._lanes.count)
    except Exception as exc:  # reported, not left to time the test out
        report = repr(exc)
    get_channel(f"{name}-active").send(report)
    threading.Event().wait()


def async_sends_that_give_up(name: str, n: int) -> None:
    """Fills ``name`` (nobody receives), then ``n`` async sends that time out and ``n`` that are
    cancelled; reports how many waiters the channel's credit still holds, then whether a send
    waiting when room comes gets through."""
    import asyncio

    from liteyuki.comm._context import current

    chan = Channel(name)

    async def main() -> None:
        while True:
            try:
                chan.send("fill", timeout=0)
            except Exception:
                break
        for i in range(n):
            try:
                await chan.async_send(i, timeout=0.001)
            except Exception:
                pass
            task = asyncio.ensure_future(chan.async_send(i))
            await asyncio.sleep(0)  # it starts waiting for credit
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        left = len(current()._credits[name]._async_waiters)
        active_channel.send(("waiters", left))
        await chan.async_send("after", timeout=20)
        active_channel.send(("sent", "after"))

    asyncio.run(main())
    threading.Event().wait()


def ask_with_reply_channels(n: int) -> None:
    """``n`` requests, each carrying a fresh reply channel it receives one answer on, then closes."""
    for i in range(n):
        reply = Channel(f"reply-{os.getpid()}-{i}")
        active_channel.send(("ask", reply))
        assert reply.receive(timeout=20) == "answer"
        reply.close()
    active_channel.send(("done", n))
    threading.Event().wait()
