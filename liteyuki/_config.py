"""The host's configuration: one validated model, built from four sources.

Precedence, highest first (README: "Configuration"):

1. ``LiteyukiBot(**kwargs)``
2. ``LITEYUKI_<KEY>`` environment variables (``LITEYUKI_STOP_GRACE=3``)
3. ``LITEYUKI_<KEY>`` lines in the ``.env`` file next to ``pyproject.toml``
4. ``[tool.liteyuki]`` in ``pyproject.toml``
5. the defaults below

``plugins`` and ``plugin_dirs`` add up instead: those of ``pyproject.toml``
(relative to its folder) come first, then the others. An unknown key in
``LiteyukiBot(...)`` or ``[tool.liteyuki]`` is an error naming the nearest valid
key; unknown ``LITEYUKI_*`` variables are ignored (other tools use that prefix
too). Every child gets a copy of the validated values (``get_config`` works
there too). Adding a key is one line in :class:`HostConfig`.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from . import _settings
from ._settings import ConfigError, UnknownSettingError, get_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DEFAULTS", "ConfigError", "HostConfig", "UnknownSettingError", "build_config", "get_config", "set_config"]

ENV_PREFIX = "LITEYUKI_"
_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
_DAY = 86_400.0
_TIB = 1 << 40


def _number(value: Any) -> Any:
    # bool is an int to Python, never a number to a user; NaN/inf pass every range check.
    if isinstance(value, bool):
        raise ValueError("must be a number, not a bool")
    if isinstance(value, str):
        try:
            value = (
                float(value)
                if any(c in value for c in ".eE") or value.strip().lower() in ("nan", "inf")
                else int(value)
            )
        except ValueError:
            raise ValueError(f"must be a number, got the text {value!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _log_level(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a level name or a number, not a bool")
    rule = f"must be one of {', '.join(_LEVELS)} or a number 0-50, got {value!r}"
    if isinstance(value, str):
        if value.strip().isdigit():
            value = int(value)
        else:
            name = value.strip().upper()
            if name not in _LEVELS:
                raise ValueError(rule)
            return name
    # A number outside 0-50 (or a float) is named by this rule here: the union of str and int
    # below would report only its first branch ("Input should be a valid string").
    if type(value) is not int or not 0 <= value <= 50:
        raise ValueError(rule)
    return value


def _string_list(value: Any) -> Any:
    # An environment variable holds a comma-separated list.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v) if isinstance(v, Path) else v for v in value]
    return value


def _path_or_none(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and value.strip().lower() in ("", "none"):
        return None
    return value


def _boolean(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
    return value


Seconds = Annotated[float, BeforeValidator(_number), Field(gt=0, le=_DAY)]
Bytes = Annotated[int, BeforeValidator(_number), Field(ge=1024, le=_TIB)]
Count = Annotated[int, BeforeValidator(_number), Field(ge=1, le=1_000_000_000)]
Flag = Annotated[bool, BeforeValidator(_boolean)]


class HostConfig(BaseModel):
    """Every host setting, its type, range and default."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    log_level: Annotated[str | Annotated[int, Field(ge=0, le=50)], BeforeValidator(_log_level)] = "INFO"
    language: Literal["zh-CN", "en-US"] = "zh-CN"
    send_timeout: Seconds = 10.0  # s a full buffer may hold a sender (never on an event loop)
    call_timeout: Seconds = 10.0  # s a child waits for the host to answer a storage call
    max_message_size: Bytes = 64 * 1024 * 1024
    outbox_limit: Bytes = 64 * 1024 * 1024  # bytes queued per child before senders wait
    pending_limit: Count = 100_000  # messages per channel waiting for a first receiver
    stop_grace: Seconds = 5.0  # s a child gets to stop before SIGTERM, then as long again before SIGKILL
    start_timeout: Seconds = 60.0  # s a child gets to connect after spawn; then it is killed and restarted
    restart_backoff: Seconds = 0.5  # first restart delay; doubles per quick crash, up to restart_backoff_max
    restart_backoff_max: Seconds = 30.0
    pyproject: Annotated[str | None, BeforeValidator(_path_or_none)] = "pyproject.toml"  # None: read no file
    plugins: Annotated[list[str], BeforeValidator(_string_list)] = []  # host plugin modules
    plugin_dirs: Annotated[list[str], BeforeValidator(_string_list)] = []  # folders of host plugins
    reload: Flag = False  # development mode: restart what changed (README: "Development mode")
    # Where shared_memory, publish and cluster channels live: "memory" (in the host) or a
    # redis:// / rediss:// / unix:// URL (README: "Scaling out"); checked by LiteyukiBot.
    storage: str | None = None
    storage_namespace: str = "liteyuki"  # prefix of every Redis key written
    cluster_claim_idle: Seconds = 30.0  # s a dead consumer's cluster-channel messages wait before others take them

    @model_validator(mode="after")
    def _backoff_order(self) -> HostConfig:
        if self.restart_backoff_max < self.restart_backoff:
            raise ValueError(
                f"restart_backoff_max ({self.restart_backoff_max}) must be >= restart_backoff ({self.restart_backoff})"
            )
        return self


DEFAULTS: dict[str, Any] = HostConfig().model_dump()
_ADDITIVE = ("plugins", "plugin_dirs")


def _check_keys(keys: Any, source: str) -> None:
    for key in keys:
        if key not in HostConfig.model_fields:
            near = difflib.get_close_matches(str(key), list(HostConfig.model_fields), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f" (valid: {', '.join(HostConfig.model_fields)})"
            raise UnknownSettingError(f"{source}: unknown setting {key!r}{hint}")


def _pyproject_table(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    try:
        data = tomllib.loads(file.read_text("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8: a byte that is not is the file's fault
        raise ConfigError(f"{file}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise ConfigError(f"{file}: [tool] must be a table, got {type(tool).__name__}")
    table = tool.get("liteyuki", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [tool.liteyuki] must be a table")
    return table


def _dotenv(file: Path) -> dict[str, str]:
    """``LITEYUKI_*`` lines of a ``.env`` file (NoneBot's format: ``KEY=value``, ``#`` comments)."""
    if not file.is_file():
        return {}
    try:
        from dotenv import dotenv_values  # NoneBot depends on python-dotenv
    except ImportError:  # pragma: no cover
        return {}
    try:
        values = dotenv_values(file)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    return {k: v for k, v in values.items() if k.upper().startswith(ENV_PREFIX) and v is not None}


def _from_env(variables: dict[str, str]) -> dict[str, str]:
    known = {ENV_PREFIX + key.upper(): key for key in HostConfig.model_fields if key != "pyproject"}
    return {known[k.upper()]: v for k, v in variables.items() if k.upper() in known}


def build_config(kwargs: dict[str, Any], environ: dict[str, str] | None = None) -> HostConfig:
    """Validate ``LiteyukiBot(**kwargs)`` merged with the environment, ``.env`` and ``pyproject.toml``."""
    _check_keys(kwargs, "LiteyukiBot()")
    environ = dict(os.environ if environ is None else environ)
    pyproject = _path_or_none(kwargs.get("pyproject", DEFAULTS["pyproject"]))
    if pyproject is not None and not isinstance(pyproject, str):
        raise ConfigError(f"LiteyukiBot(): pyproject must be a path or None, got {type(pyproject).__name__}")
    layers: list[tuple[str, dict[str, Any]]] = []
    if pyproject is not None:
        file = Path(pyproject)
        table = _pyproject_table(file)
        _check_keys(table, f"[tool.liteyuki] in {file}")
        table = _relative_to(file.parent, dict(table))
        layers.append((f"[tool.liteyuki] in {file}", table))
        dotenv = file.parent / ".env"
        # The .env beside it is the project's too: its relative plugin_dirs are the project's,
        # wherever bot.py starts (they were read against the working directory).
        layers.append((f"{dotenv}", _relative_to(file.parent, _from_env(_dotenv(dotenv)))))
    layers.append(("environment", _from_env(environ)))
    layers.append(("LiteyukiBot()", dict(kwargs)))

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, values in layers:
        for key, value in values.items():
            if key in _ADDITIVE and key in merged:
                value = [*_as_list(merged[key]), *_as_list(value)]
            merged[key] = value
            origin[key] = source
    try:
        return HostConfig(**merged)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else ""
        source = origin.get(key, "LiteyukiBot()")
        message = str(error["msg"]).removeprefix("Value error, ")
        if not key:  # a rule across keys
            raise ConfigError(f"settings: {message}") from None
        if source == "environment" or source.endswith(".env"):
            where = f"{ENV_PREFIX}{key.upper()} ({source})"
        else:
            where = f"{key} ({source})"
        got = f", got {merged[key]!r}" if key in merged and "got" not in message else ""
        raise ConfigError(f"setting {where}: {message}{got}") from None


def _relative_to(folder: Path, values: dict[str, Any]) -> dict[str, Any]:
    """``plugin_dirs`` of a project file, as paths from ``folder`` (a list, a str, or the
    comma-separated text of a ``.env``); anything else is left for the checks to name."""
    dirs = values.get("plugin_dirs")
    if isinstance(dirs, str):
        dirs = [d.strip() for d in dirs.split(",") if d.strip()]
    if isinstance(dirs, list):
        values = {**values, "plugin_dirs": [str(folder / d) if isinstance(d, str) else d for d in dirs]}
    return values


def _as_list(value: Any) -> list[Any]:
    value = _string_list(value)
    return list(value) if isinstance(value, list) else [value]


def set_config(config: dict[str, Any] | HostConfig) -> dict[str, Any]:
    """Make ``config`` (already validated: the host's, or the copy a child got) this process's."""
    return _settings.set_config(config.model_dump() if isinstance(config, HostConfig) else dict(config))
