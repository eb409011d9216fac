"""ProcessManager: named children, each spawned, watched and restarted by the host."""

from __future__ import annotations

import collections
import contextlib
import inspect
import multiprocessing
import multiprocessing.connection
import os
import pickle
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from typing import Any

from .. import log
from .._status import ProcessStatus
from .._threads import QuietThread, requiet
from ..comm import ProtocolError
from ..comm.lowlevel import (
    CHILD_ENV,
    CHILD_PID_ENV,
    MAX_NAME_LENGTH,
    Hub,
    check_name,
    check_timeout,
    new_socketpair,
    storage_env,
)
from ..log import logger
from ._child import MAIN_GUARD_EXIT, ChildSpec, child_main

__all__ = ["ProcessManager"]

HookRunner = Callable[..., None]
# A child that ran this long before crashing starts its backoff from the beginning again.
_STABLE_AFTER = 30.0
# How long a stop waits for the exit after its SIGKILL (whatever its grace: a grace of 0 used
# to return with the child still there, and a start() right after it then found it "alive").
_KILL_WAIT = 10.0
# A process name leaves room for its channels' suffix ("-passive") within a channel name's limit.
_MAX_PROCESS_NAME = MAX_NAME_LENGTH - len("-passive")


def _exit_fd(pid: int | None) -> int | None:
    """A pidfd for ``pid`` (Linux 5.3+), or None: the supervisor then watches the sentinel."""
    try:
        return os.pidfd_open(pid) if pid is not None else None  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


@dataclass
class _Run:
    """One spawn of a child, with its own events and flags.

    A restart's new run never shares state with the old one: the old run's exit
    handler (on the supervisor thread) may run after ``start()`` made the new run,
    and must neither read the new run's ``stopping`` nor detach its link.
    """

    process: multiprocessing.process.BaseProcess | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    exited: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    stop_claimed: bool = False  # a stop() ran the hooks: later ones only escalate
    connected: bool = False  # said "ready": it can stop cooperatively
    started_at: float = 0.0
    # A pidfd: readable when the child exits. multiprocessing's sentinel is a pipe the child
    # holds open, and so does every process it forks: a child that forked and was then killed
    # looked alive for as long as its forks lived (never restarted, every stop at 3x grace).
    exit_fd: int | None = None


@dataclass
class _Child:
    name: str
    # The objects themselves, as multiprocessing keeps a Process's: args may carry a Pipe's
    # Connection or a socket, which pickle by handing their descriptor over to the spawn. (A
    # pickled snapshot dup'd each descriptor into multiprocessing's resource sharer and closed
    # the copies again on unpickling in the host: descriptors closed twice, the supervisor's
    # pidfd among them, in the benchmark.)
    target: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    run: _Run = field(default_factory=_Run)
    # Restarts of one child run one after the other: each call is one full restart.
    restart_lock: threading.Lock = field(default_factory=threading.Lock)
    crashes: int = 0
    restarts: int = 0
    last_exit_code: int | None = None
    # Counts stop() calls: a restart that sees it change while its hooks ran (or while it
    # stopped the old run) does not start the child again ("never restarted").
    stops: int = 0

    @property
    def process(self) -> multiprocessing.process.BaseProcess | None:
        return self.run.process

    @property
    def ready(self) -> threading.Event:
        return self.run.ready

    @property
    def exited(self) -> threading.Event:
        return self.run.exited


def _check_process_name(name: object) -> str:
    """A plain ``str``: identifier-like (dots and dashes allowed), short enough for its channel names."""
    text = check_name(name, "process name", max_length=_MAX_PROCESS_NAME)
    if not text.replace("-", "_").replace(".", "_").isidentifier():
        raise ValueError(f"process name must be identifier-like (letters, digits, _, - and .), got {text!r}")
    return text


class _Overtaken(Exception):
    """A restart's start found that stop() came meanwhile: stop wins."""


class ProcessManager:
    """Adds, starts, stops and restarts named child processes; restarts crashed ones."""

    def __init__(self, hub: Hub, config: dict[str, Any], run_hooks: HookRunner) -> None:
        self._hub = hub
        self._config = config
        self._run_hooks = run_hooks
        self._ctx = multiprocessing.get_context("spawn")
        self._children: dict[str, _Child] = {}
        self._lock = threading.RLock()
        self._closing = False
        self._closed = threading.Event()  # set when shutting down: cancels pending restarts
        self._wake_r, self._wake_w = os.pipe()
        self._supervisor: threading.Thread | None = None
        self._console_owner: str | None = None
        # Set when a child can never start (bot.py without its __main__ guard): the host stops.
        self.fatal: str | None = None
        self.on_fatal: Callable[[str], None] = lambda message: None
        # Builds the status snapshot a child asks for (set by LiteyukiBot); JSON text.
        self.status_provider: Callable[[], str] | None = None
        # The host's event loop (set by LiteyukiBot while it runs): start(), stop() and restart()
        # called on it hand their work to a thread instead of blocking it (see _off_the_loop).
        self.host_loop: Any = None
        self._loop_work: dict[str, collections.deque[tuple[Callable[..., None], tuple[Any, ...]]]] = {}
        self._loop_workers: set[str] = set()
        hub.on_control = self._on_control
        hub.on_peer_lost = self._on_peer_lost

    # -- registry -------------------------------------------------------------
    def add_target(
        self,
        name: str,
        target: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Register child ``name``; its channels ``{name}-active`` / ``{name}-passive`` exist from now on.

        ``args`` and ``kwargs`` are kept as given, as ``multiprocessing.Process`` keeps them: each
        spawn pickles them as they are then (a Pipe's ``Connection`` or a socket may be among them).
        """
        name = _check_process_name(name)
        if not callable(target):
            raise TypeError(f"target of process {name!r} must be callable, got {type(target).__name__}")
        if not isinstance(args, (tuple, list)):  # a str would be spread into characters
            raise TypeError(f"args of process {name!r} must be a tuple or list, got {type(args).__name__}")
        if kwargs is not None and (not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs)):
            raise TypeError(f"kwargs of process {name!r} must be a dict with str keys or None, got {kwargs!r:.80}")
        try:  # what the spawn will send the child: refused now, not when the host starts
            pickle.dumps((target, tuple(args), dict(kwargs or {})))
        except Exception as exc:
            raise TypeError(
                f"target, args and kwargs of process {name!r} must pickle (a module-level function, "
                f"picklable arguments): {type(exc).__name__}: {exc}"
            ) from None
        with self._lock:
            if name in self._children:
                raise ValueError(f"a process named {name!r} was already added")
            self._children[name] = _Child(name, target, tuple(args), dict(kwargs or {}))
        self._hub.add_peer(name)

    @property
    def names(self) -> list[str]:
        return list(self._children)

    def _child(self, name: str) -> _Child:
        if not isinstance(name, str):
            raise TypeError(f"process name must be a str, got {type(name).__name__}")
        try:
            return self._children[name]
        except KeyError:
            raise KeyError(f"no process named {name!r} (known: {', '.join(self._children) or 'none'})") from None

    def target(self, name: str) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
        """The target, args and kwargs child ``name`` was added with."""
        child = self._child(name)
        return child.target, child.args, dict(child.kwargs)

    def is_alive(self, name: str) -> bool:
        return self._running(self._child(name).run)

    def pid(self, name: str) -> int | None:
        run = self._child(name).run
        return run.process.pid if run.process is not None and self._running(run) else None

    def _running(self, run: _Run) -> bool:
        """Spawned and not exited, asked without reaping it.

        ``Process.is_alive()`` reaps an exited child: called from another thread it raced
        the supervisor's ``_on_exit``, which then read exit code None and restarted a child
        that had exited cleanly. The pidfd answers without reaping; without one, the
        supervisor's ``exited`` is the answer (set a moment after the exit).
        """
        with self._lock:  # _on_exit closes the pidfd under this lock
            if run.process is None or run.exited.is_set():
                return False
            if run.exit_fd is None:
                return True
            poller = select.poll()
            poller.register(run.exit_fd, select.POLLIN)
            return not poller.poll(0)

    # -- start -------------------------------------------------------------------
    def start(self, name: str, timeout: float | None = None) -> None:
        """Spawn child ``name`` and wait until it is connected (its channels are live).

        On the host's event loop it returns at once and starts the child in a thread, after
        any ``stop`` or ``restart`` made there before it.
        """
        check_timeout(timeout)  # before anything is spawned
        child = self._child(name)
        if self._off_the_loop(child, self._start, child, timeout, None):
            return
        self._start(child, timeout, None)

    def _start(self, child: _Child, timeout: float | None, stops: int | None) -> None:
        """``start()``; with ``stops``, a restart's: ``_Overtaken`` if a stop came since."""
        name = child.name
        limit = float(self._config.get("start_timeout", 60.0)) if timeout is None else timeout
        what = "start_timeout" if timeout is None else "timeout"
        deadline = time.monotonic() + limit
        while True:
            with self._lock:
                if self._closing:
                    raise RuntimeError("the process manager is shutting down")
                if stops is not None and child.stops != stops:
                    raise _Overtaken  # checked in the lock hold that spawns: no gap for a stop
                run = child.run
                if not self._running(run):
                    run = self._spawn(child)
                    spawned = True
                    break
                if not run.stopping:  # running, or starting on another call: wait for its hello below
                    spawned = False
                    break
            # A stop (or restart) of this run is under way: start after it, as a new run. It
            # used to return at once, and the stop then left no child.
            if not run.exited.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"process {name!r} was still stopping after {limit} s ({what})")
        # `ready` is set by the child's hello, by the supervisor when the child exits first,
        # or by a shutdown (which must not wait for a slow start-up).
        if not run.ready.wait(max(0.0, deadline - time.monotonic())):
            if not spawned:
                raise RuntimeError(f"process {name!r} did not connect within {limit} s ({what})")
            # Stuck (an import that hangs, a deadlock): killed; the supervisor sees a crash and
            # restarts it with backoff, like any other crash.
            self._kill(run)
            raise RuntimeError(
                f"process {name!r} did not connect within {limit} s ({what}); killed it, it will be restarted"
            )
        if self._closing and not run.connected:
            raise RuntimeError(f"process {name!r} was stopped during start-up")
        if run.exited.is_set():
            if self.fatal is not None:
                raise RuntimeError(self.fatal)
            code = run.process.exitcode if run.process is not None else None
            raise RuntimeError(f"process {name!r} exited during start-up (exit code {code})")
        if spawned and run.process is not None:
            logger.info(f"process {name!r} started (pid {run.process.pid})")

    def _spawn(self, child: _Child) -> _Run:
        """A new run of ``child`` (called with the lock held): spawned, attached, supervised."""
        name = child.name
        target, args, kwargs = child.target, child.args, child.kwargs
        host_sock, child_sock = new_socketpair()
        host_handoff, child_handoff = socket.socketpair()
        spec = ChildSpec(
            name,
            target,
            args,
            kwargs,
            child_sock,
            dict(self._config),
            child_handoff,
            inspect.iscoroutinefunction(target),
        )
        process = self._ctx.Process(target=child_main, args=(spec,), name=f"liteyuki-{name}")
        # The environment tells the child its name and its host (and the storage: code the
        # child imports before its bootstrap ran already talks to the same Redis).
        env = {CHILD_ENV: name, CHILD_PID_ENV: str(os.getpid()), **storage_env(self._config)}
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        # The child inherits this thread's signal mask through exec: Ctrl+C while it
        # imports (spawn's bootstrap) stays pending instead of printing a traceback,
        # and child_main turns it into a clean stop once the target runs. SIGTERM stays
        # deliverable (the host uses it to end a child stuck in its bootstrap), also
        # when a liteyuki thread, which blocks it, spawns a restart.
        # The resource tracker first: launching it unblocks SIGINT and SIGTERM in this
        # thread, which must block them again if it is one of ours.
        resource_tracker.ensure_running()
        requiet()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            for key, value in saved.items():
                if value is None:
                    del os.environ[key]
                else:
                    os.environ[key] = value
        child_sock.close()
        child_handoff.close()
        # A new run (fresh events, stopping False) in the same lock hold as the attach:
        # the old run's exit handler checks `child.run is run` under this lock.
        run = child.run = _Run(process, started_at=time.monotonic(), exit_fd=_exit_fd(process.pid))
        self._hub.attach(name, host_sock, host_handoff)
        self._ensure_supervisor()
        return run

    def start_all(self) -> None:
        for name in list(self._children):
            if self._closing:  # a stop during start-up: spawn nothing more
                return
            try:
                self.start(name)
            except RuntimeError as exc:
                if self.fatal is not None:
                    return  # logged once by _on_exit; the host stops
                if self._closing:
                    logger.info(str(exc))
                    return
                logger.error(str(exc))
            except Exception:  # one child that cannot be spawned does not stop the others
                logger.exception(f"process {name!r} could not be started")

    def _release_starters(self) -> None:
        # A shutdown wakes start() calls waiting for a child's hello (see start()).
        with self._lock:
            runs = [child.run for child in self._children.values()]
        for run in runs:
            run.ready.set()

    @staticmethod
    def _kill(run: _Run) -> None:
        proc = run.process
        if proc is not None and proc.pid is not None and not run.exited.is_set():
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def status(self) -> tuple[ProcessStatus, ...]:
        """One ``ProcessStatus`` per child, in the order they were added."""
        now = time.monotonic()
        rows = []
        with self._lock:
            for child in self._children.values():
                run = child.run
                proc = run.process
                alive = proc is not None and not run.exited.is_set()
                if proc is None:
                    state = "not started"
                elif alive:
                    state = "stopping" if run.stopping else ("running" if run.connected else "starting")
                elif run.stopping or self._closing:
                    state = "stopped"
                else:
                    state = "exited" if child.last_exit_code == 0 else "crashed"
                try:
                    outbox = int(self._hub.peer_stats(child.name)["outbox_bytes"])
                except KeyError:
                    outbox = 0
                rows.append(
                    ProcessStatus(
                        name=child.name,
                        pid=proc.pid if alive and proc is not None else None,
                        state=state,
                        restarts=child.restarts,
                        uptime=round(now - run.started_at, 3) if alive else None,
                        last_exit_code=child.last_exit_code,
                        outbox_bytes=outbox,
                    )
                )
        return tuple(rows)

    # -- stop ----------------------------------------------------------------------
    def stop(self, name: str, grace: float | None = None) -> None:
        """Hooks, a stop request, ``grace`` s, SIGTERM, as long again, SIGKILL. Never restarted.

        Returns when the child is gone. On the host's event loop it returns at once and the
        stop runs in a thread (waiting there would block the loop the hooks run on).
        """
        check_timeout(grace, "grace")  # before any hook runs or anything is sent
        child = self._child(name)
        with self._lock:
            # Counted at the call, also when the work waits in the loop's queue: a restart asked
            # for before it goes on, one asked for after it is not cancelled by it.
            child.stops += 1
        if self._off_the_loop(child, self._stop, child, grace):
            return
        self._stop(child, grace)

    def _stop(self, child: _Child, grace: float | None) -> None:
        seconds = float(self._config.get("stop_grace", 5.0)) if grace is None else grace
        with self._lock:  # the run a concurrent restart's start() may just have replaced
            run = child.run
            run.stopping = True
            first, run.stop_claimed = not run.stop_claimed, True
        if run.process is None or run.exited.is_set():
            return
        if first:  # the hooks run once per run, for the first stop() of it
            self._run_hooks("before_process_shutdown", child.name)
        # A later stop() escalates on its own schedule too: the shorter grace wins (a shutdown
        # during a user's long stop keeps its stop_grace), and each call returns when it is gone.
        self._stop_process(child, run, seconds)

    def _stop_process(self, child: _Child, run: _Run, grace: float) -> None:
        proc = run.process
        if proc is None:
            return
        steps: tuple[signal.Signals | None, ...] = (None, signal.SIGTERM, signal.SIGKILL)
        if not run.connected:
            # Still starting up (no hello yet): nothing in it can stop cooperatively.
            steps = steps[1:]
        else:
            try:
                self._hub.control(child.name, "stop", str(grace).encode())
            except Exception:  # the link may already be gone; the signals below still work
                pass
        for step in steps:
            if step is not None and proc.pid is not None:
                why = "did not stop in time" if run.connected else "is still starting up"
                logger.warning(f"process {child.name!r} {why}; sending {step.name}")
                try:
                    os.kill(proc.pid, step)
                except ProcessLookupError:
                    break
            if self._wait_exit(run, _KILL_WAIT if step is signal.SIGKILL else grace):
                break
        self._detach_if_current(child, run)

    def _detach_if_current(self, child: _Child, run: _Run) -> None:
        # A newer run's link is never ours to drop.
        with self._lock:
            if child.run is run:
                self._hub.detach(child.name)

    def _wait_exit(self, run: _Run, seconds: float) -> bool:
        """Wait up to ``seconds`` for the supervisor to see ``run`` exit (without one, reap it here)."""
        if self._supervisor is None and run.process is not None and not run.exited.is_set():
            run.process.join(seconds)
            if run.process.exitcode is not None:
                run.exited.set()
            return run.exited.is_set()
        return run.exited.wait(seconds)

    def begin_shutdown(self) -> None:
        """From now on nothing is spawned, and a start-up in progress stops waiting (any thread)."""
        with self._lock:  # a spawn in progress completes first, and is then stopped by stop_all
            self._closing = True
            self._closed.set()
        self._release_starters()

    def stop_all(self, grace: float | None = None) -> None:
        """Stop every child in parallel; return when all are gone."""
        check_timeout(grace, "grace")
        self.begin_shutdown()
        with self._lock:  # add_target() from another thread may run meanwhile
            names = list(self._children)
        threads = [QuietThread(target=self.stop, args=(name, grace), name=f"liteyuki-stop-{name}") for name in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._wake()
        with self._lock:
            if self._supervisor is None:  # never started: nobody else will close the pipe
                self._close_wake_pipe()

    def kill_all(self) -> None:
        """Last resort (second Ctrl+C, interpreter exit): SIGKILL every child now."""
        with self._lock:
            self._closing = True
            self._closed.set()
            children = list(self._children.values())
        self._release_starters()
        for child in children:
            child.run.stopping = True
            proc = child.process
            if proc is not None and proc.pid is not None and not child.exited.is_set():
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def restart(self, name: str) -> None:
        """Stop child ``name`` (with hooks) and start it again.

        Calls for one child run one after the other, each a full restart; during a
        shutdown, or when ``stop()`` comes meanwhile, the call stops half-way and returns
        quietly. On the host's event loop it returns at once and the restart runs in a
        thread, as ``stop()`` does.
        """
        self._restart_or_queue(self._child(name))

    def _restart_or_queue(self, child: _Child) -> None:
        """Restart ``child`` now, or queue it on the host's loop; a stop after this call cancels it."""
        stops = child.stops
        if not self._off_the_loop(child, self._restart, child, stops):
            self._restart(child, stops)

    def _on_host_loop(self) -> bool:
        loop = self.host_loop
        return loop is not None and loop.is_running() and getattr(loop, "_thread_id", None) == threading.get_ident()

    def _off_the_loop(self, child: _Child, work: Callable[..., None], *args: Any) -> bool:
        """On the host loop's own thread, queue ``work(*args)`` for ``child``'s worker thread and
        say True.

        One worker per child runs its calls in the order they were made: a ``stop`` then a
        ``start`` from an async hook stop the child and then start it, never the other way
        round. Per child, not one for all: a shutdown hook of one child that stops another
        and waits for it would otherwise wait behind its own stop.
        """
        if not self._on_host_loop():
            return False
        with self._lock:
            queue = self._loop_work.setdefault(child.name, collections.deque())
            queue.append((work, args))
            if child.name not in self._loop_workers:
                self._loop_workers.add(child.name)
                QuietThread(
                    target=self._run_loop_work,
                    args=(child.name, queue),
                    name=f"liteyuki-from-loop-{child.name}",
                    daemon=True,
                ).start()
        return True

    def _run_loop_work(self, name: str, queue: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
        while True:
            with self._lock:
                if not queue:
                    self._loop_workers.discard(name)
                    return
                work, args = queue.popleft()
            what = f"{work.__name__.lstrip('_')} of {name!r}"  # e.g. "stop of 'nonebot'"
            try:
                work(*args)
            except RuntimeError as exc:
                if self._closing:  # refused or cut short by the shutdown: nothing to report
                    logger.debug(f"{what}: {exc}")
                else:
                    logger.error(f"{what} failed: {exc}")
            except Exception:  # the caller returned long ago: the log is where this is told
                logger.exception(f"{what} failed")

    def _restart(self, child: _Child, stops: int) -> None:
        name = child.name
        with child.restart_lock:
            if self._closing or child.stops != stops:
                return
            self._run_hooks("before_process_restart", name)
            with self._lock:
                run = child.run
                run.stopping = True
            self._stop_process(child, run, float(self._config.get("stop_grace", 5.0)))
            try:
                self._start(child, None, stops)
            except _Overtaken:
                return
            except RuntimeError:
                if self._closing or child.stops != stops:  # Ctrl+C or stop() during the start: not an error
                    logger.debug(f"restart of {name!r} cut short by a stop")
                    return
                raise
            child.restarts += 1
            self._run_hooks("after_restart", name)

    # -- supervision ---------------------------------------------------------------
    def _ensure_supervisor(self) -> None:
        if self._supervisor is None:
            self._supervisor = QuietThread(target=self._supervise, name="liteyuki-supervisor", daemon=True)
            self._supervisor.start()
        else:
            self._wake()

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w < 0:
                return
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def _close_wake_pipe(self) -> None:
        # Once nothing is supervised any more; -1 so a late _wake() cannot hit a reused fd.
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def _supervise(self) -> None:
        while True:
            with self._lock:
                watched = {
                    (c.run.process.sentinel if c.run.exit_fd is None else c.run.exit_fd): (c, c.run)
                    for c in self._children.values()
                    if c.run.process is not None and not c.run.exited.is_set()
                }
                if self._closing and not watched:
                    self._supervisor = None
                    self._close_wake_pipe()
                    return
            ready = multiprocessing.connection.wait([*watched, self._wake_r])
            for sentinel in ready:
                if sentinel == self._wake_r:
                    os.read(self._wake_r, 4096)
                    continue
                try:
                    self._on_exit(*watched[sentinel])
                except Exception:  # the supervisor must outlive any one exit: others still need it
                    logger.exception("handling a child's exit failed")
                    watched[sentinel][1].exited.set()

    def _on_exit(self, child: _Child, run: _Run) -> None:
        proc = run.process
        assert proc is not None
        code = proc.exitcode  # reaps it: the pidfd says it has exited
        if code is None:  # (the sentinel: the pipe closed a little before the exit)
            proc.join(1)
            code = proc.exitcode
        with self._lock:
            if run.exit_fd is not None:
                fd, run.exit_fd = run.exit_fd, None
                with contextlib.suppress(OSError):  # (closed under us by a stray close elsewhere)
                    os.close(fd)
        with self._lock:
            # Clean up only what belongs to this run: a restart may already have started the next.
            current = child.run is run
            if current and self._console_owner == child.name:
                self._console_owner = None
                log.set_forward(None)
            if current:
                self._hub.detach(child.name)
        if current:
            child.last_exit_code = code
        uptime = time.monotonic() - run.started_at
        if code == MAIN_GUARD_EXIT and not run.ready.is_set():
            self.fatal = (
                f"process {child.name!r} could not start: the script that creates LiteyukiBot ran again in the "
                'child. Put the start-up code under `if __name__ == "__main__":` (see bot.py in the README); '
                "children are spawned, and a spawned process imports the main script again"
            )
            logger.error(self.fatal)
            run.stopping = True
            run.exited.set()
            run.ready.set()
            self.on_fatal(self.fatal)
            return
        run.exited.set()
        run.ready.set()  # release a start() still waiting for this run
        if run.stopping or self._closing or not current:
            logger.info(f"process {child.name!r} stopped (exit code {code}, uptime {uptime:.1f} s)")
            return
        if code == 0:
            logger.info(
                f"process {child.name!r} exited normally; not restarting it (exit code 0, uptime {uptime:.1f} s)"
            )
            return
        child.crashes = 1 if uptime > _STABLE_AFTER else child.crashes + 1
        base = float(self._config.get("restart_backoff", 0.5))
        delay = min(base * 2 ** (child.crashes - 1), float(self._config.get("restart_backoff_max", 30.0)))
        logger.warning(
            f"process {child.name!r} exited unexpectedly (exit code {code}); restarting in {delay:.1f} s "
            f"(it ran {uptime:.1f} s)"
        )
        QuietThread(
            target=self._restart_after, args=(child, run, delay), name=f"liteyuki-restart-{child.name}", daemon=True
        ).start()

    def _restart_after(self, child: _Child, crashed: _Run, delay: float) -> None:
        # A back-off timer, not synchronisation: a stop in the meantime cancels it, and so
        # does a restart (or start) that already replaced the crashed run.
        self._closed.wait(delay)
        with child.restart_lock:
            if self._closing or crashed.stopping or child.run is not crashed:
                return
            stops = child.stops
            self._run_hooks("before_process_restart", child.name)
            try:
                self._start(child, None, stops)
            except _Overtaken:
                return
            except RuntimeError as exc:
                if not self._closing and child.stops == stops:
                    logger.error(f"restart of {child.name!r} failed: {exc}")
                return
            child.restarts += 1
            self._run_hooks("after_restart", child.name)

    def _on_control(self, peer: str, op: str, payload: bytes) -> None:
        child = self._children.get(peer)
        if child is None:
            return
        if op == "ready":
            child.run.connected = True
            child.ready.set()
        elif op == "status":
            QuietThread(target=self._answer_status, args=(peer, payload), daemon=True).start()
        elif op == "restart":
            QuietThread(target=self.restart, args=(peer,), daemon=True).start()
        elif op == "log":
            log.write_line(payload.decode())
        elif op == "console":
            # The child draws a UI on our shared terminal: our lines go into its log view.
            self._console_owner = peer
            log.set_forward(lambda line: self._forward_log(peer, line))

    def _answer_status(self, peer: str, ref: bytes) -> None:
        # On a thread of its own: the snapshot takes locks the reader thread must not wait for.
        provider = self.status_provider
        try:
            if provider is None:  # a manager without a LiteyukiBot: this process's own snapshot
                from .._status import local_status

                provider = lambda: local_status(self.status(), role="host").to_json()  # noqa: E731
            body = provider()
            self._hub.control(peer, "status", ref + b"\n" + body.encode())
        except Exception:
            logger.opt(exception=True).debug(f"status request of {peer!r} not answered")

    def _forward_log(self, peer: str, line: str) -> bool:
        if self._console_owner != peer:
            return False
        try:
            self._hub.control(peer, "log", line.encode(), timeout=0)
        except Exception:
            return False
        return True

    def _on_peer_lost(self, peer: str, error: BaseException | None) -> None:
        if error is None or (isinstance(error, OSError) and not isinstance(error, ProtocolError)):
            return  # a plain disconnect: the supervisor sees the exit and decides
        child = self._children.get(peer)
        logger.error(f"process {peer!r} sent garbage ({error}); killing it, it will be restarted")
        if child is not None and child.process is not None and child.process.pid is not None:
            try:
                os.kill(child.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        self.kill_all()
        self._wake()
