"""``from liteyuki.log import logger``: the same log format in every process.

Lines look like ``2024-01-01 12:00:00 [ℹ️信息] message``. Records are bound with
``liteyuki=True`` and a ``nonebot_log_level`` that NoneBot's own handler
rejects, so in a NoneBot process our lines are printed once, by our handler, in
our format, and NoneBot's lines keep NoneBot's format.

Importing this module adds no handler and does not import loguru: ``logger``
is a proxy that imports loguru on first use (a plain child that never logs
never pays for loguru, nor for the asyncio it imports). ``install()`` (called
by LiteyukiBot, the child bootstrap and the NoneBot plugin) adds our handler
at once if loguru is imported already, else when ``logger`` is first used; it
never removes anyone else's. The one consequence: in a process where our
handler is still pending, code that imports loguru itself and logs before
anyone touches ``liteyuki.log.logger`` prints through loguru's own default
handler (stderr, loguru's format); from the first use of our logger on, lines
look as described above.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from loguru import Logger, Message, Record

__all__ = ["LEVEL_NAMES", "adopt_nonebot", "install", "logger", "set_forward"]

# NoneBot's default_filter compares the record's level with this; nothing reaches it.
_ABOVE_EVERYTHING = 1_000_000

LEVEL_NAMES: dict[str, dict[str, str]] = {
    "zh-CN": {
        "TRACE": "🔍追踪",
        "DEBUG": "🐛调试",
        "INFO": "ℹ️信息",
        "SUCCESS": "✅成功",
        "WARNING": "⚠️警告",
        "ERROR": "❌错误",
        "CRITICAL": "💥严重",
    },
    "en-US": {
        "TRACE": "🔍TRACE",
        "DEBUG": "🐛DEBUG",
        "INFO": "ℹ️INFO",
        "SUCCESS": "✅SUCCESS",
        "WARNING": "⚠️WARNING",
        "ERROR": "❌ERROR",
        "CRITICAL": "💥CRITICAL",
    },
}

_lock = threading.Lock()
_handler_id: int | None = None
# install() was called but loguru was not imported yet: the handler is added (with this
# colorize) when our logger is first used.
_pending_colorize: bool | None = None
_real: Logger | None = None


def _resolve() -> Logger:
    """The bound loguru logger behind ``logger``; imports loguru and adds a pending handler."""
    global _real
    real = _real
    if real is None:
        import loguru

        real = _real = loguru.logger.bind(liteyuki=True, nonebot_log_level=_ABOVE_EVERYTHING)
    if _pending_colorize is not None:
        _add_handler()
    return real


class _LazyLogger:
    """``logger`` until first use: any attribute imports loguru and is then cached here.

    Cached attributes are the bound methods of the real (bound) loguru logger, so a
    call costs what a call on loguru's logger costs, and records name the caller.
    """

    def __getattr__(self, name: str) -> Any:
        value = getattr(_resolve(), name)
        self.__dict__[name] = value  # found by normal lookup from now on
        return value

    def __repr__(self) -> str:
        return repr(_resolve())


logger: Logger = _LazyLogger()  # type: ignore[assignment]  # a stand-in until first use
_names = LEVEL_NAMES["zh-CN"]
_level: str | int = "INFO"
_language = "zh-CN"
_forward: Callable[[str], bool] | None = None


def _is_ours(record: Record) -> bool:
    return bool(record["extra"].get("liteyuki"))


def _format(record: Record) -> str:
    record["extra"]["liteyuki_level"] = _names.get(record["level"].name, record["level"].name)
    tail = "\n{exception}" if record["exception"] else "\n"
    return "{time:YYYY-MM-DD HH:mm:ss} [<lvl>{extra[liteyuki_level]}</lvl>] {message}" + tail


def _sink(message: Message) -> None:
    # Looked up at write time: a console UI that swaps sys.stdout gets our lines.
    if _forward is not None and _forward(str(message)):
        return
    stream = sys.stdout
    if stream is None:
        return
    try:
        stream.write(message)
        stream.flush()
    except ValueError:  # closed (a test's captured stdout, interpreter shutdown): nowhere to write
        pass


def install(level: str | int = "INFO", language: str = "zh-CN", colorize: bool | None = None) -> None:
    """Add the liteyuki handler once per process (later calls update level names only).

    Added now if loguru is imported already, else when ``logger`` is first used.
    """
    global _names, _level, _language, _pending_colorize
    with _lock:
        _names = LEVEL_NAMES.get(language, LEVEL_NAMES["zh-CN"])
        _level, _language = level, language
        if _handler_id is not None:
            return
        if colorize is None:
            colorize = bool(getattr(sys.stdout, "isatty", lambda: False)())
        _pending_colorize = colorize
    if "loguru" in sys.modules or _real is not None:
        _add_handler()


def _add_handler() -> None:
    global _handler_id, _pending_colorize
    import loguru

    with _lock:
        colorize = _pending_colorize
        if _handler_id is not None or colorize is None:
            return
        try:
            # loguru's own default stderr handler (id 0) would print every line twice;
            # it is the only handler we ever remove, and only when someone sets us up.
            loguru.logger.remove(0)
        except ValueError:
            pass
        _handler_id = loguru.logger.add(
            _sink, level=_level, format=_format, filter=_is_ours, colorize=colorize, diagnose=False
        )
        _pending_colorize = None


# loguru's standard levels, for ``reaches`` before loguru is loaded.
_LEVEL_NUMBERS = {"TRACE": 5, "DEBUG": 10, "INFO": 20, "SUCCESS": 25, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def reaches(level: str) -> bool:
    """Whether a record at ``level`` (a standard name) may reach a handler.

    False only while loguru is not loaded (so no handler but ours can exist) and our
    handler's level is above ``level``: a plain child then skips the line without
    importing loguru (~34 ms) for it.
    """
    if _real is not None or "loguru" in sys.modules:
        return True
    ours = _level if isinstance(_level, int) else _LEVEL_NUMBERS.get(str(_level).upper(), 0)
    return _LEVEL_NUMBERS[level] >= ours


def installed() -> bool:
    """True once ``install()`` ran (its handler may still wait for the first log line)."""
    return _handler_id is not None or _pending_colorize is not None


def reinstall() -> None:
    """Add our handler again after someone removed every handler (``import nonebot`` does)."""
    global _handler_id
    import loguru

    with _lock:
        if _handler_id is not None:
            try:
                loguru.logger.remove(_handler_id)
            except ValueError:
                pass
            _handler_id = None
    install(_level, _language)


def set_forward(forward: Callable[[str], bool] | None) -> None:
    """Route formatted lines elsewhere (True = taken) — used while a child owns the terminal."""
    global _forward
    _forward = forward


def write_line(line: str) -> None:
    """Print an already formatted line where ours go (used for lines from another process)."""
    _sink(line)  # type: ignore[arg-type]


def _nonebot_format(record: Record) -> str:
    record["extra"]["liteyuki_level"] = _names.get(record["level"].name, record["level"].name)
    tail = "\n{exception}" if record["exception"] else "\n"
    return (
        "<g>{time:YYYY-MM-DD HH:mm:ss}</g> [<lvl>{extra[liteyuki_level]}</lvl>] <c><u>{name}</u></c> | {message}" + tail
    )


def adopt_nonebot() -> None:
    """Give NoneBot's own handler our timestamp and level names (its filter and sink stay).

    Used in the NoneBot child of a Liteyuki host, so host, child and NoneBot lines read
    as one log; ``nonebot.log.logger_id`` follows, since adapters look the handler up by it.
    """
    import loguru
    import nonebot.log as nonebot_log

    try:
        loguru.logger.remove(nonebot_log.logger_id)
    except ValueError:
        return  # someone else replaced NoneBot's handler already: leave theirs alone
    nonebot_log.logger_id = loguru.logger.add(
        sys.stdout, level=0, diagnose=False, filter=nonebot_log.default_filter, format=_nonebot_format
    )
