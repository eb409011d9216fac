"""Status snapshots (host and child), child start-up supervision, host plugins loaded by path."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import liteyuki
from liteyuki import Status, load_plugin, load_plugins

from . import hang_once, targets
from .conftest import unique
from .test_channels import ask


def test_host_status_lists_processes_channels_and_store(host):
    name = unique()
    bot = host({name: targets.agent})
    from liteyuki.comm.storage import shared_memory

    shared_memory.set(f"{name}:k", "v" * 100)
    assert ask(name, "echo", "up") == "up"  # answered: the child receives on its passive channel now
    snapshot = bot.status()
    assert isinstance(snapshot, Status) and snapshot.role == "host" and snapshot.host_pid == os.getpid()
    (proc,) = [p for p in snapshot.processes if p.name == name]
    assert proc.state == "running" and proc.pid == bot.process_manager.pid(name) and proc.restarts == 0
    assert proc.uptime is not None and proc.uptime >= 0 and proc.last_exit_code is None
    channels = {c.name: c for c in snapshot.channels}
    assert channels[f"{name}-passive"].receivers == (name,)
    assert snapshot.store.keys >= 1 and snapshot.store.bytes >= 100
    data = snapshot.to_dict()
    assert Status.from_dict(data) == snapshot
    text = snapshot.format()
    assert f"{name}: running, pid {proc.pid}" in text and "store:" in text


def test_child_gets_the_same_snapshot_from_the_host(host):
    name = unique()
    bot = host({name: targets.agent})
    data = ask(name, "status")
    assert data["role"] == "host" and data["host_pid"] == os.getpid()
    assert [p["name"] for p in data["processes"]] == bot.process_manager.names
    assert {"name", "pid", "state", "restarts", "uptime", "last_exit_code"} <= set(data["processes"][0])
    assert {c["name"] for c in data["channels"]} >= {f"{name}-active", f"{name}-passive"}


def test_messages_waiting_for_a_receiver_show_in_the_status(host):
    from liteyuki.comm import Channel, set_channel

    name = unique("waiting")
    bot = host({unique(): targets.agent})
    chan = Channel(name)
    set_channel(name, chan)
    for i in range(3):
        chan.send(i)  # no process receives on it yet: the host holds them
    (row,) = [c for c in bot.status().channels if c.name == name]
    assert row.waiting == 3 and row.receivers == ()
    assert f"{name}: buffered" in bot.status().format()


def test_get_bot_in_a_child_says_where_to_look(host):
    name = unique()
    host({name: targets.agent})
    error = ask(name, "get_bot")
    assert isinstance(error, RuntimeError)
    assert "child process" in str(error) and "liteyuki.status()" in str(error)


def test_a_child_that_does_not_connect_in_time_is_killed_and_restarted(host, tmp_path, monkeypatch):
    flag = tmp_path / "hung-once"
    monkeypatch.setenv("HANG_ONCE_FLAG", str(flag))
    name = unique()
    bot = host({name: hang_once.agent}, start_timeout=3.0, restart_backoff=0.1)
    assert flag.exists()  # the first child got stuck importing its target

    def restarted() -> bool:
        (proc,) = bot.process_manager.status()
        return proc.state == "running" and proc.restarts == 1

    deadline = time.monotonic() + 30
    while not restarted():
        assert time.monotonic() < deadline, bot.status().format()
        time.sleep(0.05)
    (proc,) = bot.process_manager.status()
    assert proc.last_exit_code == -9
    assert ask(name, "echo", "alive") == "alive"


def test_host_plugin_named_like_a_stdlib_module_runs(tmp_path, capfd):
    import random

    (tmp_path / "random.py").write_text("RAN = True\n")
    module = load_plugin(tmp_path / "random.py")
    assert module is not None and module.RAN is True
    assert module is not random and sys.modules["random"] is random
    assert module.__name__ == "liteyuki_plugins.random"
    assert load_plugin(tmp_path / "random.py") is module  # the same file: loaded once
    other = tmp_path / "other"
    other.mkdir()
    (other / "random.py").write_text("RAN = 'second'\n")
    (second,) = load_plugins(other)
    assert second.RAN == "second" and second.__name__ == "liteyuki_plugins.random_2"
    out = capfd.readouterr().out
    assert "loaded host plugin liteyuki_plugins.random (" in out


def test_host_plugin_package_with_relative_imports(tmp_path):
    pkg = tmp_path / "json"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .helper import VALUE\n")
    (pkg / "helper.py").write_text("VALUE = 42\n")
    module = load_plugin(pkg)
    assert module is not None and module.VALUE == 42 and module.__name__ == "liteyuki_plugins.json"


@pytest.mark.parametrize("bad", ["not valid.py", "1st.py"])
def test_host_plugin_file_name_must_be_a_module_name(tmp_path, bad, capfd):
    (tmp_path / bad).write_text("X = 1\n")
    assert load_plugin(tmp_path / bad) is None
    assert "failed to load" in capfd.readouterr().out


def test_status_in_standalone_describes_this_process():
    code = "import liteyuki; s = liteyuki.status(); print(s.role, len(s.processes), s.store.keys)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["standalone", "0", "0"], result.stdout + result.stderr


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "1"])
def test_status_timeout_is_checked(bad):
    with pytest.raises(ValueError, match=r"^timeout must be a finite number of seconds > 0 or None, got "):
        liteyuki.status(timeout=bad)


def test_sigusr1_to_a_child_does_not_kill_it(host):
    import signal

    name = unique()
    bot = host({name: targets.agent})
    pid = bot.process_manager.pid(name)
    os.kill(pid, signal.SIGUSR1)
    assert ask(name, "pid") == pid
