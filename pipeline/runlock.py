"""One job per stage and run folder: a lock file holding the owner's pid and host.

Two jobs writing one run folder interleave checkpoints, shards and metrics. Each stage's entry point
(teacher, data generation, student, export) therefore holds ``<folder>/.<stage>.lock`` while it runs:

* the file is created atomically (``O_CREAT | O_EXCL``) and holds the owner's pid, host name, boot id
  and process start time as JSON; it is removed when the job ends, normally or by an exception;
* a second live job on the same folder is refused in one line (:class:`~core.errors.UserError` naming
  the lock file and the owner's pid);
* a lock left by a job that died (SIGKILL, power loss) is *stale*: same host, and its pid is gone (or
  now belongs to a younger process, or the machine rebooted since). It is taken over with a warning;
* a lock held from another host cannot be checked from here and is treated as live (the message says
  which host; delete the file if that job is gone).

Under ``torchrun`` or Lightning's DDP launcher only global rank 0 takes the lock (the ranks of one job
share the folder on purpose): the other ranks of a second job stop when their rank 0 is refused,
because the launcher ends the whole job when one of its processes fails.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from core.errors import UserError

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# an unreadable lock younger than this may be one whose owner is still writing its first bytes
_FRESH_SECONDS = 10.0
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")


def lock_path(folder: str | Path, stage: str) -> Path:
    """The lock file of ``stage`` in ``folder``."""
    return Path(folder) / f".{stage}.lock"


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 of its launcher (``torchrun``, Lightning DDP) or unlaunched."""
    return all(os.environ.get(name, "0") in ("", "0") for name in _RANK_VARIABLES)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks after boot (Linux), or None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in (...) may hold spaces


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie does not: torchrun ranks killed with their launcher wait as zombies
    until init reaps them, which some container inits never do."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux), or it exited just now
        return True


def _owner_record(stage: str) -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "boot_id": _boot_id(), "start": _start_ticks(pid),
            "stage": stage, "since": time.time()}


def _is_stale(owner: dict[str, Any]) -> bool:
    """Whether the job that wrote ``owner`` is surely gone (it ran on this machine and its pid is dead)."""
    if owner.get("host") != socket.gethostname():
        return False
    if owner.get("boot_id") and owner.get("boot_id") != _boot_id():
        return True  # the machine rebooted since
    pid = int(owner.get("pid", -1))
    if pid <= 0 or not _pid_alive(pid):
        return True
    start = owner.get("start")
    return start is not None and _start_ticks(pid) not in (None, start)  # the pid was reused


def _read_owner(path: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _try_create(path: Path, record: dict[str, Any]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(record) + "\n")
    return True


def _describe(path: Path, owner: dict[str, Any] | None) -> str:
    if owner is None:
        return f"{path} is being taken by another job (unreadable lock file)"
    where = "" if owner.get("host") == socket.gethostname() else f" on host {owner.get('host')}"
    return (f"{path} is held by a running job (pid {owner.get('pid')}{where}); wait for it to finish, or "
            f"delete {path} if no such job runs")


def _take_over(path: Path, owner: dict[str, Any] | None) -> None:
    """Remove the stale lock ``path`` if it still holds ``owner`` (another job may have taken it over)."""
    aside = path.with_name(f"{path.name}.{os.getpid()}.stale")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    if _read_owner(aside) != owner:  # someone took it over between our read and the rename: put it back
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)
    if owner is not None:
        log.warning("%s: taking over the lock of stage %s left by pid %s on %s, which is no longer running",
                    path, owner.get("stage"), owner.get("pid"), owner.get("host"))
    else:
        log.warning("%s: taking over an unreadable lock file older than %.0f s", path, _FRESH_SECONDS)


def acquire(folder: str | Path, stage: str) -> Path:
    """Take the lock of ``stage`` in ``folder`` (created if needed); returns the lock file.

    Raises:
        UserError: another live job holds it (the message names the file and the owner's pid).
    """
    path = lock_path(folder, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = _owner_record(stage)
    for _ in range(3):
        if _try_create(path, record):
            return path
        owner = _read_owner(path)
        if owner is None:  # half-written by a job starting right now, or left by one killed while writing
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < _FRESH_SECONDS:
                raise UserError(_describe(path, None))
        elif not _is_stale(owner):
            raise UserError(_describe(path, owner))
        _take_over(path, owner)
    raise UserError(_describe(path, _read_owner(path)))


def release(path: Path) -> None:
    """Remove the lock file ``path`` if this process still owns it."""
    owner = _read_owner(path)
    if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextmanager
def run_lock(folder: str | Path, stage: str) -> Iterator[Path | None]:
    """Hold the lock of ``stage`` in ``folder`` for the ``with`` block (rank 0 only; other ranks get None).

    Raises:
        UserError: another live job holds the lock.
    """
    if not is_rank_zero():
        yield None
        return
    created = not Path(folder).exists()
    path = acquire(folder, stage)
    try:
        yield path
    finally:
        release(path)
        if created and not any(Path(folder).iterdir()):  # a job that failed at once leaves no empty folder
            Path(folder).rmdir()


def locked_run(stage: str, folder: Callable[..., str | Path | None]) -> Callable[[Callable[P, T]],
                                                                                   Callable[P, T]]:
    """Decorate a stage's ``run(cfg)`` so that it holds :func:`run_lock` while it runs.

    Args:
        stage: the stage name (part of the lock file's name).
        folder: called with the run's arguments; returns the folder to lock, or None for a read-only run.
    """

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            where = folder(*args, **kwargs)
            if where is None:
                return fn(*args, **kwargs)
            with run_lock(where, stage):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
