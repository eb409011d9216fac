"""Runs of frames as the reader hands them on: shared by the host's hub and a child's client.

A module of its own so a child, which needs only this from the hub's side,
does not load the hub (routing, the store) to get it.
"""

from __future__ import annotations

from collections.abc import Iterator

from ._wire import Frame, Kind

__all__ = ["message_runs"]


def message_runs(frames: list[Frame]) -> Iterator[tuple[Frame, list[bytes] | None]]:
    """Each frame, except that a run of MESSAGE frames on one channel comes as one item
    with all their payloads (delivered or routed in one go); other frames come with None."""
    i, n = 0, len(frames)
    while i < n:
        frame = frames[i]
        if frame.kind is not Kind.MESSAGE:
            yield frame, None
            i += 1
            continue
        j = i + 1
        while j < n and frames[j].kind is Kind.MESSAGE and frames[j].name == frame.name:
            j += 1
        yield frame, [f.payload for f in frames[i:j]]
        i = j
