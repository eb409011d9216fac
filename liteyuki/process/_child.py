"""The child's entry point: connect, install the singletons, then run the target.

Everything a child needs travels as one picklable ``ChildSpec``. Before the
target runs, ``liteyuki.comm.active_channel`` / ``passive_channel`` are live,
logging has our format, stdin is usable again, and the child watches its host:
if the host disappears the child stops itself (SIGINT first, so frameworks run
their shutdown hooks; ``os._exit`` after a grace period).

A plain child (a sync target) imports only what it uses (docs/ARCHITECTURE.md,
"Child start-up"): the transport, no asyncio, loguru or pydantic. Its dispatch
loop (an event loop in a thread, for passive callbacks and async calls) starts
the first time something needs it, and "ready" goes to the host before
anything optional (the process title, stdin) is set up.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import socket
import sys
import threading
from collections.abc import Callable

from .. import _settings, log
from .._threads import QuietThread
from ..comm import lowlevel
from ..comm.lowlevel import dispatcher
from ..log import logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from typing import Any, NamedTuple
else:
    from .._lean_typing import NamedTuple

__all__ = ["MAIN_GUARD_EXIT", "ChildSpec", "child_main", "request_stop"]

# Exit status of a child whose bootstrap ran the host's start-up code again (no
# `if __name__ == "__main__":` in bot.py): the host reports it once and stops.
MAIN_GUARD_EXIT = 78

# After a stop request (or the host's death) a child gets this long before it is forced out.
_SELF_STOP_GRACE = 3.0
# How long the first callback or async call waits for its dispatch loop to be made.
_LOOP_START = 30.0


class ChildSpec(NamedTuple):
    """Everything a child needs, pickled once into the spawned process.

    A NamedTuple, not a dataclass: the child unpickles it first thing, and
    ``dataclasses`` would cost it ~6 ms of start-up (see ``_ops``).
    """

    name: str
    target: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    sock: socket.socket
    config: dict[str, Any] | None = None  # the host's validated settings (None: the defaults)
    handoff: socket.socket | None = None  # where this child's threads hand their lanes to the host
    is_async: bool = False  # the target is a coroutine function (decided by the host: no inspect here)


_stop_lock = threading.Lock()
_stopping = False
# Exit status when the link to the host broke while the host lives on: non-zero, so
# the host's supervisor restarts this child instead of taking it for a clean exit.
_LINK_LOST = 70
_exit_code = 0


# How this process asks itself to stop; a framework with a gentler way installs it
# (run_nonebot does: a SIGINT on top of the terminal's Ctrl+C would mean "force quit").
_stopper: Callable[[], None] | None = None


def set_stopper(stopper: Callable[[], None] | None) -> None:
    """Use ``stopper()`` instead of a SIGINT to ourselves when a stop is requested."""
    global _stopper
    _stopper = stopper


def request_stop(reason: str, grace: float = _SELF_STOP_GRACE) -> None:
    """Ask this process to stop (SIGINT to itself, or the framework's own way); ``os._exit``
    after ``grace`` s if it has not exited by then."""
    global _stopping
    with _stop_lock:
        if _stopping:
            return
        _stopping = True
    if log.reaches("DEBUG"):
        logger.debug(f"stopping: {reason}")

    def force() -> None:
        if not _exited.wait(grace):
            os._exit(_exit_code)

    QuietThread(target=force, name="liteyuki-stop-deadline", daemon=True).start()
    stopper = _stopper
    if stopper is not None:
        try:
            stopper()
            return
        except Exception:  # e.g. the framework's loop is already closed
            pass
    os.kill(os.getpid(), signal.SIGINT)


_exited = threading.Event()


def _watch_parent() -> None:
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch() -> None:
        # poll(), not multiprocessing.connection.wait(): that module costs a cold
        # child ~3 ms of imports (tempfile, shutil, bz2, lzma, random) for one wait.
        waiter = select.poll()
        waiter.register(sentinel, select.POLLIN)
        waiter.poll()  # the sentinel turns readable (EOF) when the host process ends
        request_stop("the host process is gone")

    QuietThread(target=watch, name="liteyuki-parent-watch", daemon=True).start()


def _reopen_stdin() -> None:
    # multiprocessing replaces sys.stdin with /dev/null in the child, but fd 0 is
    # still the terminal; a console UI in the child needs it back.
    if (sys.stdin is None or sys.stdin.closed or not sys.stdin.isatty()) and os.isatty(0):
        try:
            sys.stdin = sys.__stdin__ = open(0, closefd=False)  # noqa: SIM115  (Textual reads __stdin__)
        except OSError:
            pass


def _start_dispatch_thread() -> asyncio.AbstractEventLoop:
    """The plain child's dispatch loop: an event loop in a daemon thread.

    The dispatcher's starter: it runs the first time a passive callback, a
    subscriber or an async call needs a loop, so a child that only makes sync
    calls never imports asyncio.
    """
    import asyncio

    made: list[asyncio.AbstractEventLoop] = []
    created = threading.Event()

    def run() -> None:
        # Made here, where SIGINT is blocked: the caller is often the main thread, and a
        # Ctrl+C in the middle of BaseEventLoop.__init__ leaves a half-made loop whose
        # destructor prints a traceback (seen once in CI, in test_ctrl_c_stops_everything_cleanly).
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        made.append(loop)
        created.set()
        loop.run_forever()

    QuietThread(target=run, name="liteyuki-dispatch", daemon=True).start()
    if not created.wait(_LOOP_START):
        raise RuntimeError(f"the dispatch loop was not made within {_LOOP_START} s")
    return made[0]


async def _run_async(target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import asyncio

    loop = asyncio.get_running_loop()
    dispatcher.bind(loop)
    try:
        return await target(*args, **kwargs)
    finally:
        try:
            await lowlevel.end_callbacks()  # they run on this loop: ended here, while it runs
        finally:  # (a second stop signal cancels that wait: the loop is let go all the same)
            dispatcher.unbind(loop)


def child_main(spec: ChildSpec) -> None:
    """Spawn target of every child process (runs in the child)."""
    # Ctrl+C during set-up (it reaches the whole process group) is held back until the
    # target runs: a KeyboardInterrupt in the middle of building an event loop leaves a
    # half-made object whose destructor prints a traceback.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    # SIGTERM (the host's second step, or a stop request to a server driver) is a clean stop
    # like Ctrl+C; servers such as uvicorn take it over while they run.
    signal.signal(signal.SIGTERM, _stop_signal)
    # A stop request is a SIGINT to ourselves. A host started with SIGINT ignored (in the
    # background, by a shell script) passes SIG_IGN on through spawn's exec, and Python then
    # installs no handler: the request went unheard until the host's SIGTERM after its grace.
    signal.signal(signal.SIGINT, _stop_signal)
    # SIGUSR1 asks the host for a status dump; one sent to the whole group must not kill us.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    config = _settings.set_config(spec.config or {})
    # Our handler is added when the logger is first used (loguru is imported then).
    log.install(config["log_level"], config["language"])
    os.environ.setdefault("LITEYUKI_PROCESS_NAME", spec.name)

    runtime = lowlevel.current()
    if not isinstance(runtime, lowlevel.ChildRuntime) or runtime.process_name != spec.name:
        runtime = lowlevel.ChildRuntime(spec.name, config)
        lowlevel.install(runtime)
    runtime.configure(config)
    runtime.on_host_lost = lambda error: _on_host_lost(error)
    runtime.on_control = lambda op, payload: _on_control(op, payload)
    runtime.connect(spec.sock, spec.handoff)
    runtime.control("ready", str(os.getpid()).encode())
    # What is not needed to be "ready" comes after it.
    _watch_parent()
    _set_title(spec.name)
    _reopen_stdin()

    code = 0
    me = os.getpid()
    loop: asyncio.AbstractEventLoop | None = None
    try:
        if spec.is_async:
            import asyncio

            loop = asyncio.new_event_loop()
            main = loop.create_task(_run_async(spec.target, spec.args, spec.kwargs))
            # A stop cancels the target's task, as asyncio.run does for Ctrl+C, instead of
            # raising KeyboardInterrupt wherever the loop is: in the middle of a passive
            # callback it cut the callback, whose message was reported consumed (lost).
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, main.cancel)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                loop.run_until_complete(main)
            except asyncio.CancelledError:
                pass  # a stop: as KeyboardInterrupt below
            finally:
                for signum in (signal.SIGINT, signal.SIGTERM):
                    # (loop.close() below would reset them to the defaults, under the clean-up:
                    # a late SIGTERM would then kill the process before its flush)
                    loop.remove_signal_handler(signum)
                    signal.signal(signum, _stop_signal)
        else:
            if not getattr(spec.target, "liteyuki_own_loop", False):
                dispatcher.set_starter(_start_dispatch_thread)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
            spec.target(*spec.args, **spec.kwargs)
        if not getattr(spec.target, "liteyuki_own_loop", False):  # (NoneBot's run has its own exit)
            _join_user_threads()
    except KeyboardInterrupt:
        pass  # Ctrl+C or a stop request: a deliberate, clean stop
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code and not isinstance(exc.code, int):  # sys.exit("message"): Python prints it
            logger.error(f"process {spec.name!r} exited: {exc.code}")
    except BaseException:
        logger.exception(f"process {spec.name!r} crashed")
        code = 1
    finally:
        if os.getpid() != me:
            # A copy the target forked, ending here: the link, the lanes and the host are the
            # real child's; clean-up from this copy would close them under it.
            os._exit(code)
        # The target is over: a late stop request (it sends SIGINT) or a second Ctrl+C
        # must not interrupt the clean-up below with a KeyboardInterrupt traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        _end_callbacks(lowlevel.CALLBACKS_END)
        if loop is not None:
            loop.close()
        # What the target sent last must reach the host before we go.
        runtime.flush(5.0)
        _exited.set()
        if _exit_code and code == 0:
            logger.error(f"process {spec.name!r} lost its link to the host; exiting with code {_exit_code}")
            code = _exit_code
        runtime.close()
    sys.stdout.flush()
    os._exit(code)


def _end_callbacks(wait: float) -> None:
    """A clean stop ends the passive callbacks before the link: every receiving end of this
    process closes (what it was handed and did not run goes back to the host, for the successor),
    then the callback running now, and the tasks async ones left, may finish (up to
    ``wait`` s; the stop's own deadline ends the process anyway).

    Before, callbacks ran on while the link closed: their consumption reports went
    nowhere, so the successor ran up to 80 finished messages again, and the exit cut the
    running callback in the middle (reported, never finished: lost at every restart)."""
    lowlevel.close_receiving_ends()
    loop = dispatcher.loop
    if loop is None or not loop.is_running():
        return  # nothing runs callbacks now (an async target's loop, NoneBot's: over)
    import asyncio

    try:
        # (the ends are closed above, at once: a drain stops after the callback running now)
        asyncio.run_coroutine_threadsafe(lowlevel.callbacks_done(wait), loop).result(wait)
    except Exception:  # the wait ran out, or the loop stopped under us: go on with the exit
        pass


def _join_user_threads() -> None:
    """The target returned: wait for the threads it started that are not daemons, as
    multiprocessing's own bootstrap does (``threading._shutdown``), so a worker thread still
    serving a channel is not cut off. Executors shut down first (the hooks Python runs at
    exit), as there. A stop request still ends the wait (KeyboardInterrupt from its handler)."""
    for hook in reversed(getattr(threading, "_threading_atexits", [])):
        try:
            hook()
        except Exception:
            logger.exception("a thread shutdown hook raised")
    me = threading.current_thread()
    while pending := [t for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()]:
        for thread in pending:
            thread.join()


def _on_host_lost(error: BaseException | None) -> None:
    # Not a stop the host asked for: we exit non-zero, so a living host restarts us.
    global _exit_code
    _exit_code = _LINK_LOST
    request_stop(f"the host connection was lost ({error or 'EOF'})")


_interrupted_at = -1.0
# A stop signal this soon after the last one is the same stop (see _stop_signal).
SAME_STOP = 1.0


def stop_asked() -> bool:
    """Whether a stop already reached this process: asked for (``request_stop``) or raised by a
    stop signal. A process that runs on after one had its ``KeyboardInterrupt`` swallowed: a
    framework installing its own way to stop later carries the stop out then."""
    return _stopping or _interrupted_at >= 0


def _stop_signal(signum: int, frame: Any) -> None:
    """SIGINT and SIGTERM: a clean stop, raised as ``KeyboardInterrupt``.

    Ctrl+C (to the whole process group) and the host's SIGTERM often arrive together; Python
    runs the second handler at the first check inside ``child_main``'s ``except`` clause,
    and that second ``KeyboardInterrupt`` escaped with a traceback, skipping the flush (8 of 8
    double signals). So a signal within a second of the last raised one is ignored; a later
    one raises again (a target that swallowed a stray Ctrl+C still stops cleanly later).
    """
    global _interrupted_at
    import time

    now = time.monotonic()
    if _interrupted_at >= 0 and now - _interrupted_at < SAME_STOP:
        return
    _interrupted_at = now
    raise KeyboardInterrupt


_stop_signal.raises_keyboard_interrupt = True  # type: ignore[attr-defined]  # (see _dispatch.stops_the_process)


def _set_title(name: str) -> None:
    """``liteyuki: nonebot`` in ps/top instead of ``python -c from multiprocessing.spawn import …``."""
    setproctitle = _title_setter()
    if setproctitle is not None:
        setproctitle(f"liteyuki: {name}")


def _title_setter() -> Callable[[str], None] | None:
    """setproctitle's C function, loaded without its package's ``__init__``.

    The package's ``__init__`` imports ``logging`` (only to report that the C module
    is missing): ~6-18 ms, the largest single cost of a plain child's start-up. The C
    module alone costs ~0.3 ms; it is registered under its own name, so a later
    ``import setproctitle`` uses it too. Any surprise: the ordinary import.
    """
    name = "setproctitle._setproctitle"
    module = sys.modules.get(name)
    if module is None:
        try:
            import importlib.machinery
            import importlib.util

            package = importlib.util.find_spec("setproctitle")  # found, not executed
            locations = package.submodule_search_locations if package is not None else None
            spec = importlib.machinery.PathFinder.find_spec(name, list(locations or ()))
            if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
                raise ImportError(name)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[name] = module
        except Exception:
            try:
                import setproctitle
            except ImportError:  # pragma: no cover  (a dependency; only a broken install lacks it)
                return None
            return setproctitle.setproctitle
    return module.setproctitle  # type: ignore[no-any-return]


def _on_control(op: str, payload: bytes) -> None:
    if op == "status":
        from .._status import requests

        requests.answer(payload)
    elif op == "stop":
        request_stop("the host asked this process to stop", grace=float(payload.decode() or _SELF_STOP_GRACE))
    elif op == "log":
        log.write_line(payload.decode())
