"""``pipeline.runlock``: one live job per stage and folder; a dead owner's lock is taken over."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import UserError
from pipeline.runlock import acquire, lock_path, locked_run, run_lock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_owner_is_refused_in_one_line(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = lock_path(tmp_path, "teacher")
        lock.write_text(json.dumps({"pid": live.pid, "host": socket.gethostname()}))
        with pytest.raises(UserError) as info:
            acquire(tmp_path, "teacher")
        message = str(info.value)
        assert "\n" not in message and str(lock) in message and f"pid {live.pid}" in message
        assert json.loads(lock.read_text())["pid"] == live.pid  # untouched
    finally:
        live.kill()
        live.wait()


def test_a_dead_owner_is_taken_over_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock = lock_path(tmp_path, "student")
    dead = _dead_pid()
    lock.write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "stage": "student"}))
    with caplog.at_level(logging.WARNING, logger="pipeline.runlock"), run_lock(tmp_path, "student") as held:
        assert held == lock and json.loads(lock.read_text())["pid"] != dead
    assert not lock.exists()  # released
    assert [r for r in caplog.records if str(lock) in r.getMessage() and str(dead) in r.getMessage()]


def test_a_zombie_owner_is_dead(tmp_path: Path) -> None:
    """A killed rank whose parent died first stays a zombie until init reaps it: its lock is stale."""
    import time

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # not waited for: a zombie once it exits
    try:
        stat = Path(f"/proc/{zombie.pid}/stat")
        end = time.monotonic() + 30
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z" and time.monotonic() < end:
            time.sleep(0.01)
        lock = lock_path(tmp_path, "teacher")
        lock.write_text(json.dumps({"pid": zombie.pid, "host": socket.gethostname(), "stage": "teacher"}))
        with run_lock(tmp_path, "teacher") as held:
            assert held == lock and json.loads(lock.read_text())["pid"] != zombie.pid
    finally:
        zombie.wait()


def test_another_host_is_treated_as_live(tmp_path: Path) -> None:
    other = {"pid": 1, "host": "elsewhere-" + socket.gethostname()}
    lock_path(tmp_path, "export").write_text(json.dumps(other))
    with pytest.raises(UserError, match="on host elsewhere-"):
        acquire(tmp_path, "export")


def test_two_holders_in_turn_and_other_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    @locked_run("data_gen", lambda folder: folder)
    def job(folder: Path) -> bool:
        return lock_path(folder, "data_gen").is_file()

    assert job(tmp_path) and job(tmp_path)  # released after each run
    acquire(tmp_path, "data_gen")  # this process holds it now: a second job is refused ...
    with pytest.raises(UserError, match=r"\.data_gen\.lock is held by a running job"):
        job(tmp_path)
    monkeypatch.setenv("LOCAL_RANK", "1")  # ... but another rank of the same job takes no lock
    assert job(tmp_path)
