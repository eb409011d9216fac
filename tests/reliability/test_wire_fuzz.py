"""FrameDecoder under fuzzing: any bytes give frames or ProtocolError, and every frame
survives being split anywhere."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liteyuki.comm._errors import ProtocolError
from liteyuki.comm._wire import DEFAULT_MAX_MESSAGE_SIZE, Frame, FrameDecoder, Kind, encode

from . import rtargets

names = st.text(max_size=40)
frames = st.builds(
    Frame,
    kind=st.sampled_from(Kind),
    ref=st.integers(0, 2**64 - 1),
    name=names,
    payload=st.binary(max_size=3000),
)


def _encode(frame: Frame) -> bytes:
    return encode(frame.kind, frame.name, frame.payload, frame.ref)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def _feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[Frame]:
    out: list[Frame] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


@settings(max_examples=400, deadline=None)
@given(
    data=st.binary(max_size=4096),
    cuts=st.lists(st.integers(0, 4096), max_size=10),
    max_size=st.sampled_from([0, 10, 1000, DEFAULT_MAX_MESSAGE_SIZE]),
)
def test_random_bytes_give_frames_or_protocol_error(data, cuts, max_size):
    decoder = FrameDecoder(max_size)
    try:
        for frame in _feed_all(decoder, _split(data, cuts)):
            assert isinstance(frame.kind, Kind) and isinstance(frame.name, str) and isinstance(frame.payload, bytes)
    except ProtocolError:
        pass
    assert decoder.buffered <= max(len(data), 0)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.one_of(frames.map(_encode), st.binary(max_size=64)), max_size=12),
    cuts=st.lists(st.integers(0, 40_000), max_size=12),
)
def test_valid_frames_mixed_with_junk_give_frames_or_protocol_error(parts, cuts):
    data = b"".join(parts)
    try:
        _feed_all(FrameDecoder(), _split(data, cuts))
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(sent=st.lists(frames, max_size=20), data=st.data())
def test_round_trip_split_at_arbitrary_points(sent, data):
    stream = b"".join(map(_encode, sent))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    decoder = FrameDecoder()
    assert _feed_all(decoder, _split(stream, cuts)) == sent
    assert decoder.buffered == 0


def test_byte_by_byte_and_the_largest_name():
    sent = [Frame(Kind.PUBLISH, 2**64 - 1, "n" * 65535, b"p" * 100), Frame(Kind.CONTROL, 0, "", b"")]
    stream = b"".join(map(_encode, sent))
    decoder = FrameDecoder()
    assert _feed_all(decoder, [stream[i : i + 1] for i in range(len(stream))]) == sent


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (rtargets.GARBAGE["random"], "frame length 471568101 is out of range"),
        (rtargets.GARBAGE["length"], "frame length 4294967295 is out of range"),
        (rtargets.GARBAGE["short"], "frame length 2 is out of range"),
        (rtargets.GARBAGE["kind"], "unknown frame kind 99"),
        (rtargets.GARBAGE["overrun"], "frame name length 500 overruns the frame"),
        (rtargets.GARBAGE["utf8"], "frame name is not UTF-8"),
    ],
)
def test_each_kind_of_garbage_has_its_own_message(data, error):
    with pytest.raises(ProtocolError, match=f"^{error}$"):
        FrameDecoder().feed(data)


def test_a_length_above_the_maximum_is_refused_before_anything_is_buffered():
    decoder = FrameDecoder(max_size=1000)
    # a request may carry two values (compare_and_set) plus its fields' room, then the header and name
    limit = 2 * 1000 + 64 * 1024 + struct.calcsize("!BQH") + 65535
    assert decoder.feed(struct.pack("!I", limit)) == []  # in range: waits for the rest
    with pytest.raises(ProtocolError, match=rf"^frame length {limit + 1} is out of range$"):
        FrameDecoder(max_size=1000).feed(struct.pack("!I", limit + 1))


# -- runs of messages: after the first frame of a run only lengths are read ------------------
run_frames = st.builds(
    Frame,
    kind=st.sampled_from([Kind.MESSAGE, Kind.MESSAGE, Kind.MESSAGE, Kind.PUBLISH]),
    ref=st.sampled_from([0, 0, 1]),
    name=st.sampled_from(["a", "a", "ab", "b", ""]),
    payload=st.binary(max_size=40),
)


def _feed_runs_as_a_reader(decoder: FrameDecoder, chunks: list[bytes], stale: bytes) -> tuple[list[Frame], int]:
    """Feed like Reader: one reused buffer, each read at its front and stale bytes behind it."""
    size = max((len(c) for c in chunks), default=0) + len(stale)
    chunk = bytearray(size)
    out: list[Frame] = []
    counted = 0
    for data in chunks:
        chunk[: len(data)] = data
        chunk[len(data) : len(data) + len(stale)] = stale  # what an earlier read left there
        runs, count = decoder.feed_runs(chunk, len(data))
        counted += count
        for first, payloads in runs:
            if payloads is None:
                out.append(first)
                continue
            assert first.kind is Kind.MESSAGE and payloads[0] == first.payload
            out += [Frame(first.kind, first.ref, first.name, p) for p in payloads]
    return out, counted


@settings(max_examples=300, deadline=None)
@given(sent=st.lists(run_frames, max_size=30), data=st.data())
def test_runs_of_messages_round_trip_split_anywhere_with_stale_bytes_behind_each_read(sent, data):
    stream = b"".join(map(_encode, sent))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    # Stale bytes that look like the next message of a run: a reader must stop at the read's end.
    stale = data.draw(st.sampled_from([b"", stream[:64], _encode(Frame(Kind.MESSAGE, 0, "a", b"stale")) * 3]))
    decoder = FrameDecoder()
    got, count = _feed_runs_as_a_reader(decoder, _split(stream, cuts), stale)
    assert got == sent
    assert count == len(sent)
    assert decoder.buffered == 0
    # The frames of one run share kind MESSAGE, name and ref; a run ends where any of them changes.
    runs, _ = FrameDecoder().feed_runs(stream, len(stream))
    for first, payloads in runs:
        assert payloads is None or first.kind is Kind.MESSAGE
    assert len(runs) == sum(
        1 for i, f in enumerate(sent) if i == 0 or f.kind is not Kind.MESSAGE or sent[i - 1][:3] != f[:3]
    )


@pytest.mark.parametrize(
    ("length", "error"),
    [
        (3, "frame length 3 is out of range"),
        (11, "frame name length 1 overruns the frame"),  # shorter than its own header and name
        (2**32 - 1, "frame length 4294967295 is out of range"),
    ],
)
def test_a_bad_length_inside_a_run_of_messages_is_refused(length, error):
    message = _encode(Frame(Kind.MESSAGE, 0, "a", b"payload"))
    bad = struct.pack("!I", length) + message[4:]  # the run's own bytes after a bad length
    with pytest.raises(ProtocolError, match=f"^{error}$"):
        FrameDecoder().feed(message * 3 + bad)


# -- one whole frame per read (the lanes): sliced straight from the bytes ---------------------
def _outcome(decoder: FrameDecoder, data: bytes | bytearray) -> list[Frame] | str:
    try:
        return decoder.feed(data)
    except ProtocolError as exc:
        return f"ProtocolError: {exc}"


@settings(max_examples=400, deadline=None)
@given(
    frame=frames,
    patches=st.lists(st.tuples(st.integers(4, 40), st.integers(0, 255)), max_size=4),
    max_size=st.sampled_from([0, 10, 1000, DEFAULT_MAX_MESSAGE_SIZE]),
)
def test_a_whole_frame_in_one_read_decodes_as_the_general_path_does(frame, patches, max_size):
    # bytes take the one-frame path, a bytearray the general one; garbage in the kind, ref,
    # name length or name (the patched bytes) must get the same frames or the same error.
    data = bytearray(_encode(frame))
    for pos, value in patches:
        if pos < len(data):
            data[pos] = value
    fast = _outcome(FrameDecoder(max_size), bytes(data))
    assert fast == _outcome(FrameDecoder(max_size), data)
    if not patches and max_size == DEFAULT_MAX_MESSAGE_SIZE:
        assert fast == [frame]


def test_a_whole_frame_above_the_maximum_is_refused():
    limit = 2 * 0 + 64 * 1024 + struct.calcsize("!BQH") + 65535  # FrameDecoder(max_size=0)'s bound
    whole = _encode(Frame(Kind.RESULT, 1, "", b"x" * (limit - struct.calcsize("!BQH") + 1)))
    with pytest.raises(ProtocolError, match=rf"^frame length {limit + 1} is out of range$"):
        FrameDecoder(max_size=0).feed(whole)
