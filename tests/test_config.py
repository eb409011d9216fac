"""The host configuration: one validated model from kwargs, environment, .env and pyproject.toml."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import liteyuki
from liteyuki._config import DEFAULTS, ConfigError, HostConfig, UnknownSettingError, build_config

NUMERIC = [
    name
    for name, field in HostConfig.model_fields.items()
    if name not in ("log_level",) and field.annotation in (int, float)
]


def project(tmp_path: Path, table: str = "", dotenv: str = "") -> Path:
    (tmp_path / "pyproject.toml").write_text(f"[tool.liteyuki]\n{table}\n")
    (tmp_path / ".env").write_text(dotenv)
    return tmp_path / "pyproject.toml"


def test_defaults_without_any_source():
    config = build_config({"pyproject": None}, environ={})
    assert config.model_dump() == {**DEFAULTS, "pyproject": None}


def test_precedence_kwargs_then_environment_then_dotenv_then_pyproject(tmp_path):
    file = project(
        tmp_path,
        table="stop_grace = 1.0\nsend_timeout = 1.0\ncall_timeout = 1.0\nstart_timeout = 1.0",
        dotenv="LITEYUKI_SEND_TIMEOUT=2\nLITEYUKI_CALL_TIMEOUT=2\nLITEYUKI_START_TIMEOUT=2\nDRIVER=~none\n",
    )
    environ = {"LITEYUKI_CALL_TIMEOUT": "3", "LITEYUKI_START_TIMEOUT": "3", "LITEYUKI_CONSOLE": "headless"}
    config = build_config({"pyproject": str(file), "start_timeout": 4}, environ=environ)
    assert (config.stop_grace, config.send_timeout, config.call_timeout, config.start_timeout) == (1.0, 2.0, 3.0, 4.0)
    assert config.restart_backoff == DEFAULTS["restart_backoff"]


def test_plugins_add_up_and_pyproject_dirs_are_relative_to_the_file(tmp_path):
    file = project(tmp_path, table='plugins = ["a"]\nplugin_dirs = ["host_plugins"]')
    config = build_config({"pyproject": file, "plugins": ["b"], "plugin_dirs": ["elsewhere"]}, environ={})
    assert config.plugins == ["a", "b"]
    assert config.plugin_dirs == [str(tmp_path / "host_plugins"), "elsewhere"]


def test_log_level_and_language_from_pyproject_take_effect(tmp_path):
    file = project(tmp_path, table='log_level = "debug"\nlanguage = "en-US"')
    config = build_config({"pyproject": file}, environ={})
    assert (config.log_level, config.language) == ("DEBUG", "en-US")


def test_unknown_key_names_the_nearest_valid_one(tmp_path):
    with pytest.raises(UnknownSettingError, match=r"unknown setting 'stop_grce'; did you mean 'stop_grace'\?"):
        liteyuki.LiteyukiBot(pyproject=None, stop_grce=1)
    with pytest.raises(TypeError):  # also a TypeError, like any unexpected keyword
        build_config({"pyproject": None, "log_levle": "INFO"}, environ={})
    file = project(tmp_path, table="restart_backof = 1")
    with pytest.raises(UnknownSettingError, match=r"\[tool\.liteyuki\] in .*'restart_backof'.*'restart_backoff'"):
        build_config({"pyproject": file}, environ={})


def test_unknown_liteyuki_environment_variables_are_ignored():
    build_config({"pyproject": None}, environ={"LITEYUKI_SOMETHING_ELSE": "x", "LITEYUKI_CHILD_NAME": "n"})


@pytest.mark.parametrize("key", NUMERIC)
@pytest.mark.parametrize("bad", [True, False, math.nan, math.inf, -math.inf, -1, 0, "ten", None, [1]])
def test_every_numeric_setting_is_a_finite_number_in_range_and_not_bool(key, bad):
    with pytest.raises(ConfigError, match=rf"setting {key} \(LiteyukiBot\(\)\)"):
        build_config({"pyproject": None, key: bad}, environ={})


@pytest.mark.parametrize("key", NUMERIC)
def test_numeric_settings_from_the_environment_are_checked_too(key):
    with pytest.raises(ConfigError, match=rf"LITEYUKI_{key.upper()} \(environment\)"):
        build_config({"pyproject": None}, environ={f"LITEYUKI_{key.upper()}": "nan"})


def test_too_large_values_are_refused():
    with pytest.raises(ConfigError, match="stop_grace"):
        build_config({"pyproject": None, "stop_grace": 10**9}, environ={})
    with pytest.raises(ConfigError, match="outbox_limit"):
        build_config({"pyproject": None, "outbox_limit": 1 << 50}, environ={})


def test_backoff_max_below_backoff_is_refused():
    with pytest.raises(ConfigError, match=r"restart_backoff_max .* must be >= restart_backoff"):
        build_config({"pyproject": None, "restart_backoff": 5, "restart_backoff_max": 1}, environ={})


def test_bad_log_level_and_language():
    with pytest.raises(ConfigError, match="log_level"):
        build_config({"pyproject": None, "log_level": "LOUD"}, environ={})
    with pytest.raises(ConfigError, match="log_level"):
        build_config({"pyproject": None, "log_level": True}, environ={})
    with pytest.raises(ConfigError, match="language"):
        build_config({"pyproject": None, "language": "fr"}, environ={})
    # A number out of range, given as a number or as the text of one: the rule, not pydantic's
    # "Input should be a valid string" (the first branch of the str | int union).
    for bad, source in ((51, {}), (-1, {}), (3.5, {}), (None, {"LITEYUKI_LOG_LEVEL": "51"})):
        kwargs = {"pyproject": None} if bad is None else {"pyproject": None, "log_level": bad}
        with pytest.raises(ConfigError, match=r"(?i)log_level.*must be one of TRACE, .* or a number 0-50, got"):
            build_config(kwargs, environ=source)


def test_a_bad_value_changes_nothing():
    bot = liteyuki.LiteyukiBot(pyproject=None, stop_grace=2.5)
    try:
        with pytest.raises(ConfigError):
            liteyuki.LiteyukiBot(pyproject=None, stop_grace=-1)
        assert liteyuki.get_config("stop_grace") == 2.5
        assert liteyuki.get_bot() is bot
    finally:
        bot.hub.close()


def test_environment_values_are_parsed(tmp_path):
    environ = {"LITEYUKI_RELOAD": "false", "LITEYUKI_PLUGINS": "a, b", "LITEYUKI_PENDING_LIMIT": "10"}
    config = build_config({"pyproject": None}, environ=environ)
    assert (config.reload, config.plugins, config.pending_limit) == (False, ["a", "b"], 10)


def test_broken_pyproject_is_a_config_error(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.liteyuki\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_config({"pyproject": tmp_path / "pyproject.toml"}, environ={})


def test_non_utf8_files_and_a_tool_that_is_not_a_table_are_config_errors(tmp_path):
    """They raised a raw UnicodeDecodeError / AttributeError at start-up."""
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_bytes(b"[tool.liteyuki]\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml: not UTF-8 \(invalid continuation byte at byte \d+\)$"):
        build_config({"pyproject": pyproject}, environ={})
    pyproject.write_text("tool = 5\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml: \[tool\] must be a table, got int$"):
        build_config({"pyproject": pyproject}, environ={})
    pyproject.write_text("[tool.liteyuki]\n")
    (tmp_path / ".env").write_bytes(b"LITEYUKI_STOP_GRACE=2\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"\.env: not UTF-8"):
        build_config({"pyproject": pyproject}, environ={})


def test_plugin_dirs_from_the_projects_dotenv_or_a_string_are_the_projects(tmp_path, monkeypatch):
    """Read against the working directory, they were not found when bot.py started elsewhere."""
    file = project(tmp_path, 'plugin_dirs = "src/one"', "LITEYUKI_PLUGIN_DIRS=src/two, /abs/three\n")
    monkeypatch.chdir(tmp_path.parent)
    config = build_config({"pyproject": file}, environ={"LITEYUKI_PLUGIN_DIRS": "from/cwd"})
    assert config.plugin_dirs == [str(tmp_path / "src/one"), str(tmp_path / "src/two"), "/abs/three", "from/cwd"]
