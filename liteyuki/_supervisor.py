"""The reload supervisor: the process the user started with ``--reload``.

It runs the host as a new process with the same command line, in a session of
its own, and replaces it when a host plugin or the configuration changes — the
way uvicorn's reloader replaces its server process. What it guarantees:

- one host at a time: the old host (and its children) has exited, or was
  killed with its whole process group after a deadline, before the new one starts;
- Ctrl+C / SIGTERM / SIGHUP: forwarded once to the host as SIGTERM (the host's
  graceful stop), the host's process group killed if it is still there after
  STOP_DEADLINE s; exit status 0. A second Ctrl+C kills the group at once;
- a host that exits with an error (a broken ``bot.py``) is logged, and the next
  change starts it again; a host that exits with 0 by itself ends the supervisor;
- log lines: the host inherits our stdout/stderr, so its lines, and its children's,
  reach the same terminal or file as ours.

Why a session of its own: a terminal's Ctrl+C would otherwise reach the host and
its children directly as well, and a second signal means "force quit" to them.
The host watches a pipe from us and stops itself if we disappear.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from ._reload import SUPERVISOR_FD_ENV, child_rules
from ._threads import QuietThread
from ._watch import Rule, Watcher, describe
from .log import logger

if TYPE_CHECKING:
    from ._bot import LiteyukiBot

__all__ = ["STOP_DEADLINE", "Supervisor"]

# After Ctrl+C the host gets this long to stop its children and exit (Ctrl+C: exit within 10 s).
STOP_DEADLINE = 8.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_TICK = 0.5  # s between deadline checks of the main loop


class _Host:
    """One host process: spawned in a new session; its exit is reported as an event."""

    def __init__(self, events: queue.SimpleQueue[tuple[Any, ...]]) -> None:
        read_end, self._pipe = os.pipe()
        # No bytecode written in development mode: a .pyc is trusted when the source's size and
        # mtime (whole seconds) match, so a same-size edit within the second of an import would
        # otherwise load the old code after a restart.
        env = {**os.environ, SUPERVISOR_FD_ENV: str(read_end), "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            # The same interpreter, options and arguments (``-m pkg`` and ``-X`` included).
            self.proc = subprocess.Popen(
                [sys.executable, *sys.orig_argv[1:]], env=env, pass_fds=(read_end,), start_new_session=True
            )
        except BaseException:
            os.close(self._pipe)
            raise
        finally:
            os.close(read_end)
        self.pid = self.proc.pid
        self.stopping = False
        self.kill_at: float | None = None
        name = f"liteyuki-reload-host-{self.pid}"
        QuietThread(target=self._wait, args=(events,), name=name, daemon=True).start()

    def _wait(self, events: queue.SimpleQueue[tuple[Any, ...]]) -> None:
        self.proc.wait()
        events.put(("exit", self))

    def stop(self, within: float) -> None:
        """SIGTERM (the host's graceful stop) once; its process group is killed after ``within`` s."""
        deadline = time.monotonic() + within
        self.kill_at = deadline if self.kill_at is None else min(self.kill_at, deadline)
        if not self.stopping:
            self.stopping = True
            self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def kill_group(self) -> None:
        """SIGKILL the host's session (it leads its process group; its children are in it)."""
        self.kill_at = None
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def forward(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """After the host exited: kill what it left in its group, close its pipe."""
        self.kill_group()
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1


class Supervisor:
    """``run()`` until Ctrl+C (or until the host stops by itself with status 0)."""

    def __init__(self, bot: LiteyukiBot, rules: list[Rule]) -> None:
        self.bot = bot
        self.rules = rules
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._host: _Host | None = None
        self._restart_within = 2 * float(bot.config.get("stop_grace", 5.0)) + 5.0

    def run(self) -> None:
        events = self._events
        previous = {s: signal.signal(s, self._on_signal) for s in _STOP_SIGNALS}
        if sys.stdin is not None and sys.stdin.isatty() and hasattr(signal, "SIGWINCH"):
            # The terminal resizes only its foreground group (ours): tell a console UI in the host's session.
            previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, self._forward)
        # `kill -USR1 <the pid the user started>` asks for the status (README, "Status"): the
        # host logs it. Not handled here, its default action ended this process and the bot.
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._forward)
        watcher = Watcher(
            self.rules,
            on_change=lambda _process, paths: events.put(("change", paths)),
            on_live=lambda: logger.info(
                "reload: watching host plugins and the configuration (pyproject.toml, .env*, the main script); "
                "a change there restarts the whole host, and host state (shared memory, queued messages) "
                "is not kept across that restart"
            ),
            all_rules=self.rules + child_rules(self.bot),
        )
        try:
            watcher.start()
            self._start_host()
            self._loop()
        finally:
            watcher.stop()
            if self._host is not None:  # only on an unexpected error: leave nothing behind
                self._host.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.bot.hub.close()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._events.put(("signal", signum))  # SimpleQueue.put is safe in a signal handler

    def _forward(self, signum: int, frame: Any) -> None:
        host = self._host
        if host is not None:
            host.forward(signum)

    def _start_host(self) -> None:
        self._host = _Host(self._events)
        logger.info(f"reload: host process started (pid {self._host.pid})")

    def _loop(self) -> None:
        stopping = False
        pending: set[str] = set()  # changes that arrived while the old host was stopping
        while True:
            try:
                event = self._events.get(timeout=_TICK)
            except queue.Empty:
                event = ("tick",)
            host = self._host
            match event:
                case ("signal", signum):
                    if not stopping:
                        stopping = True
                        logger.info(f"received {signal.Signals(signum).name}; stopping")
                        if host is None:
                            return
                        host.stop(STOP_DEADLINE)
                    elif host is not None:
                        logger.warning("second stop signal: killing the host and its children now")
                        host.kill_group()
                case ("change", paths):
                    if stopping:
                        continue
                    if host is not None and host.stopping:
                        pending.update(paths)  # the restart already under way picks them up
                        continue
                    logger.info(
                        f"reload: {describe(paths)} changed; restarting the host "
                        "(host state — shared memory, queued messages — is not kept)"
                    )
                    if host is None:
                        self._start_host()
                    else:
                        host.stop(self._restart_within)
                case ("exit", done):
                    done.close()
                    if done is not host:
                        continue
                    self._host = None
                    if stopping:
                        logger.debug(f"reload: host exited (code {done.proc.returncode})")
                        return
                    if done.stopping or pending:
                        pending.clear()
                        self._start_host()
                        continue
                    code = done.proc.returncode
                    if code == 0:
                        logger.info("reload: the host stopped by itself; stopping the reloader too")
                        return
                    logger.error(f"reload: the host exited with code {code}; the next change starts it again")
                case _:
                    if host is not None and host.kill_at is not None and time.monotonic() >= host.kill_at:
                        logger.warning(f"reload: the host (pid {host.pid}) did not stop in time; killing its processes")
                        host.kill_group()
