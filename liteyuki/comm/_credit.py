"""A counting gate: senders take credit, the receiving side gives it back.

Flow control in ``liteyuki.comm`` is credit-based (as in HTTP/2 and QUIC
streams): a sender puts a message on the wire only against credit. Threads
wait for credit on a condition (with a deadline), coroutines on a future; no
lock is held while anyone waits.
"""

from __future__ import annotations

import threading
import time

from ._loopcall import call_in_loop, settle

TYPE_CHECKING = False
if TYPE_CHECKING:  # imported where used: a plain child that never awaits does not load asyncio
    import asyncio

__all__ = ["Credit"]


class Credit:
    """``available`` units; ``take`` one, ``give`` any number back."""

    __slots__ = ("_async_waiters", "_cond", "_lock", "_sync_waiters", "available", "closed", "epoch")

    def __init__(self, available: int) -> None:
        self.available = available
        self.closed = False
        self.epoch = 0  # bumped by interrupt(): whoever waits now gives up
        # ``with self._lock`` is ``with self._cond`` without Condition.__enter__'s Python frame
        # (every message takes and gives credit).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sync_waiters = 0
        # A list, not a deque: an empty deque holds a 0.5 KB block, and most channels never
        # have an async sender waiting (every route of the host has a Credit; row 7b).
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def waiting(self) -> bool:
        """Whether anyone waits for a unit now."""
        return bool(self._sync_waiters or self._async_waiters)

    def try_take(self) -> bool:
        with self._lock:
            if self.available > 0:
                self.available -= 1
                return True
            return False

    def take(self, timeout: float) -> bool:
        """Take one unit, waiting up to ``timeout`` s; False if none came (or the gate closed)."""
        with self._lock:
            if self.available > 0:
                self.available -= 1
                return True
            if timeout <= 0 or self.closed:
                return False
            deadline = time.monotonic() + timeout
            epoch = self.epoch
            self._sync_waiters += 1
            try:
                while self.available <= 0 and not self.closed and self.epoch == epoch:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._cond.wait(remaining):
                        if self.available > 0:
                            break
                        return False
                if (self.closed and self.available <= 0) or self.epoch != epoch:
                    return False
                self.available -= 1
                return True
            finally:
                self._sync_waiters -= 1

    async def take_async(self, timeout: float | None) -> bool:
        """Take one unit without blocking the loop; False after ``timeout`` s (None: no limit)."""
        import asyncio  # loaded already: we run on a loop

        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        epoch = self.epoch
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            with self._lock:
                if self.epoch != epoch:
                    return False
                if self.available > 0:
                    self.available -= 1
                    return True
                if self.closed or (remaining is not None and remaining <= 0):
                    return False
                fut: asyncio.Future[None] = loop.create_future()
                self._async_waiters.append((loop, fut))
            try:
                await asyncio.wait_for(fut, remaining)
            except asyncio.TimeoutError:
                self._leave(fut)  # (if a give chose us meanwhile, its unit is ours to take now)
                return self.try_take()
            except BaseException:
                if not self._leave(fut):
                    self.give(0, wake=1)  # a give chose us, and we leave: hand the wake-up on
                raise

    def _leave(self, fut: asyncio.Future[None]) -> bool:
        """Remove a waiter that gives up (timed out, cancelled); False if it was gone already
        (a ``give`` or ``interrupt`` took it). Left behind, a channel that stayed full kept
        one entry per timed-out ``async_send``, in every process."""
        with self._lock:
            for i, (_, waiter) in enumerate(self._async_waiters):
                if waiter is fut:
                    del self._async_waiters[i]
                    return True
        return False

    def give(self, n: int, wake: int = 0) -> None:
        """Add ``n`` units and wake as many waiters (``wake`` more: pass a wake-up on)."""
        with self._lock:
            self.available += n
            n += wake
            if n <= 0 or self.available <= 0 or not (self._sync_waiters or self._async_waiters):
                return
            if self._sync_waiters:
                self._cond.notify(n)
            woken = []
            while self._async_waiters and len(woken) < n:
                loop, fut = self._async_waiters.pop(0)
                if not fut.done():
                    woken.append((loop, fut))
        for loop, fut in woken:
            call_in_loop(loop, settle, fut)

    def close(self) -> None:
        """Wake every waiter; later takes fail unless units remain."""
        with self._lock:
            self.closed = True
        self.interrupt()

    def interrupt(self) -> None:
        """Every take waiting now returns False (its sender's end closed); later takes are
        not affected."""
        with self._lock:
            self.epoch += 1
            self._cond.notify_all()
            wake, self._async_waiters = self._async_waiters, []
        for loop, fut in wake:
            call_in_loop(loop, settle, fut)
