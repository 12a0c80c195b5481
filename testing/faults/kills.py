"""Killing real stage processes at the worst moment, as a crash or a dying node does.

:func:`kill_at_a_save` SIGKILLs a command while it writes its resume checkpoint (``TMPDIR`` on another
filesystem: :func:`shm_tmpdir`); :func:`kill_job_when` kills a ``torchrun`` job and every rank it started
once a condition holds (:func:`partitioned_saving`: a region save under way). The fault cases of
:mod:`testing.faults.checkpoints` and the resume tests of the training stages use them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from testing.cli import REPO


def child_env(tmpdir: Path | None = None) -> dict[str, str]:
    """The environment of a stage started here: this repository importable, one thread, short Hydra
    errors, and ``TMPDIR`` set to ``tmpdir`` if given."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env


@contextmanager
def shm_tmpdir() -> Iterator[Path]:
    """A fresh folder on ``/dev/shm`` (another filesystem than the run folder) to serve as ``TMPDIR``."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="ckpt_tmp_", dir=base) as tmp:
        yield Path(tmp)


def _saving(last: Path, tmpdir: Path) -> tuple[int, int] | None:
    """``(size of last.ckpt, largest save in progress)`` while a save is under way after a first one."""
    temps = [*last.parent.glob(f".{last.name}.*.tmp"), *(p for p in tmpdir.iterdir() if p.is_file())]
    if not temps or not last.is_file():
        return None
    try:
        return last.stat().st_size, max(t.stat().st_size for t in temps)
    except FileNotFoundError:  # the save finished between the listing and the stat
        return None


def kill_at_a_save(cmd: list[str], last: Path, tmpdir: Path, patience: int = 2, timeout: float = 120.0
                   ) -> bool:
    """Start ``cmd`` and SIGKILL it while it saves ``last`` (after ``last`` exists at least once).

    It kills at once when the destination is smaller than the save in progress (a copy over it is under
    way: what Lightning's writer does when ``TMPDIR`` is another filesystem), else at the start of the
    ``patience``-th save seen in progress. ``TMPDIR`` of the child is ``tmpdir``.

    Returns:
        Whether it was killed (False: it finished, or did not save within ``timeout``).
    """
    proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(tmpdir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    seen, was_saving, end = 0, False, time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < end:
            sizes = _saving(last, tmpdir)
            if sizes is not None and not was_saving:
                seen += 1
            was_saving = sizes is not None
            if sizes is not None and (sizes[0] < sizes[1] or seen >= patience):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.0005)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def kill_job_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 120.0) -> bool:
    """Start ``cmd`` and SIGKILL it and every process it started once ``ready()`` holds, as a node dies.

    Killing ``cmd``'s process group is not enough under ``torchrun``: it starts each rank in a session of
    its own, and ranks whose launcher was killed train on to the end. So every descendant is found
    (``/proc``, by parent pid) and killed, then waited for until none is left alive (a rank left alive
    would hold the run-folder lock and write on).

    Returns:
        Whether it was killed (False: it ended, or ``ready()`` did not hold within ``timeout``).
    """
    proc = subprocess.Popen(cmd, cwd=REPO, env=child_env(None), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    end, killed = time.monotonic() + timeout, False
    try:
        while proc.poll() is None and time.monotonic() < end:
            if ready():
                killed = True
                break
            time.sleep(0.001)
    finally:
        tree = _descendants(proc.pid)
        for pid in [proc.pid, *tree]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        while tree and time.monotonic() < end + 10.0:
            tree = [pid for pid in tree if _alive(pid)]
            time.sleep(0.01)
    return killed


def _parents() -> dict[int, int]:
    """``{pid: parent pid}`` of every process (Linux ``/proc``)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            out[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    return out


def _descendants(pid: int) -> list[int]:
    parents, found, todo = _parents(), [], [pid]
    while todo:
        children = [child for child, parent in parents.items() if parent == todo[-1]]
        todo.pop()
        found += children
        todo += children
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def partitioned_saving(folder: Path) -> Callable[[], bool]:
    """``ready`` of :func:`kill_job_when`: a partitioned run's resume files exist (``teacher.ckpt`` and its
    region files) and a region save is under way, or, failing that, ``teacher.ckpt`` was rewritten twice."""
    ckpt, seen = folder / "teacher.ckpt", set()

    def ready() -> bool:
        try:
            seen.add(ckpt.stat().st_mtime_ns)
        except FileNotFoundError:
            return False
        saving = any((folder / "partitions").glob(".region-*.tmp"))
        return (saving and any((folder / "partitions").glob("region-*.ckpt"))) or len(seen) >= 3

    return ready
