"""The state of a pseudo-data folder: which job it belongs to, which shards are done, ``meta.json``.

A job is everything that determines the shards' bytes (image size, sampler and seed, counts, teacher
checkpoint sha256, ...): the contents of ``meta.json`` without the shard list. The teacher is identified
by its checkpoint's sha256 alone: the test PSNR ``meta.json`` also reports comes from the teacher's
``metrics.json``, which a re-evaluation rewrites without changing the checkpoint. Before rendering, the
job is recorded in ``<folder>/.progress/job.json``; after each shard is renamed into place, a sidecar
``<folder>/.progress/<shard>.json`` records its view range and sha256 (both written atomically). A run
that was killed therefore knows exactly what is done: a shard counts as complete when its sidecar
exists and the file still has the recorded hash; anything else is rendered again. Per-shard sidecars
(rather than one manifest) let several processes share a folder without locking.

``meta.json`` is written once every shard of the job is complete (by whichever process completes the
last one; its content does not depend on who writes it).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.io import sha256_file, write_json
from core.shards import META_NAME, SHARD_GLOB, PseudoMeta, ShardFormatError, ShardInfo, parse_meta, shard_name
from data_gen.shards import check_shard
from pipeline.provenance import first_difference, ignored_fields

log = logging.getLogger(__name__)

PROGRESS_DIR = ".progress"
JOB_NAME = "job.json"
# Keys that describe where the job ran rather than what it produces (the fields of PseudoMeta marked
# ``provenance: False``: a shared folder may be mounted at different paths on different machines), or
# report on an input without changing it.
_IGNORED_IN_COMPARISON = ignored_fields(PseudoMeta) | {("teacher", "test_psnr")}


class JobMismatchError(UserError):
    """The output folder holds shards of a different job."""


def shard_ranges(n_views: int, views_per_shard: int) -> list[tuple[int, int]]:
    """``(first_view, n_views)`` of every shard of a job."""
    return [(first, min(views_per_shard, n_views - first)) for first in range(0, n_views, views_per_shard)]


def job_record(meta: PseudoMeta) -> dict[str, Any]:
    """The job part of a meta: everything but the shard list."""
    d = meta.to_dict()
    d.pop("shards")
    return d


class JobFolder:
    """One pseudo-data folder and the job meant to fill it."""

    def __init__(self, folder: str | Path, meta: PseudoMeta) -> None:
        """``meta``: the job's meta with an empty shard list (the shards are filled in as they finish)."""
        self.folder = Path(folder)
        self.meta = meta
        self.job = job_record(meta)
        self.ranges = shard_ranges(meta.n_views, meta.views_per_shard)

    @classmethod
    def from_disk(cls, folder: str | Path) -> JobFolder:
        """The job recorded in ``folder`` (its ``meta.json``, else its job record), for verification.

        Raises:
            ShardFormatError: the folder holds neither.
        """
        folder = Path(folder)
        for path in (folder / META_NAME, folder / PROGRESS_DIR / JOB_NAME):
            if path.is_file():
                try:
                    d = json.loads(path.read_text())
                except (OSError, json.JSONDecodeError) as exc:
                    raise ShardFormatError(f"{path}: unreadable ({exc})") from None
                meta = parse_meta(d, path, require_shards=False)
                meta.shards = []
                return cls(folder, meta)
        raise ShardFormatError(f"{folder}: no {META_NAME} or {PROGRESS_DIR}/{JOB_NAME}: nothing to verify")

    @property
    def progress(self) -> Path:
        return self.folder / PROGRESS_DIR

    def shard_path(self, index: int) -> Path:
        return self.folder / shard_name(index)

    def _sidecar(self, index: int) -> Path:
        return self.progress / f"{shard_name(index)}.json"

    def _final_meta(self) -> PseudoMeta | None:
        path = self.folder / META_NAME
        if not path.exists():
            return None
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ShardFormatError(f"{path}: unreadable ({exc}); not overwriting it") from None
        return parse_meta(d, path)

    def prepare(self, write: bool = True) -> None:
        """Check the folder belongs to this job (or is new) and record the job (if ``write``).

        Raises:
            JobMismatchError: the folder holds ``meta.json``, a job record or shards of another job.
        """
        final = self._final_meta()
        if final is not None:
            self._compare(job_record(final), self.folder / META_NAME)
        job_path = self.progress / JOB_NAME
        if job_path.exists():
            try:
                recorded = json.loads(job_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise JobMismatchError(f"{job_path}: unreadable job record ({exc}); not overwriting") \
                    from None
            self._compare(recorded, job_path)
        elif final is None and any(self.folder.glob(SHARD_GLOB)):
            raise JobMismatchError(f"{self.folder}: holds shards of an unknown job (no {META_NAME} and no "
                                   f"{PROGRESS_DIR}/{JOB_NAME}); not overwriting them")
        if write and not job_path.exists():
            write_json(job_path, self.job)

    def _compare(self, recorded: dict[str, Any], path: Path) -> None:
        diff = first_difference(recorded, self.job, ignore=_IGNORED_IN_COMPARISON)
        if diff:
            raise JobMismatchError(f"{path}: the folder holds shards of a different job ({diff}); "
                                   f"choose another run_dir/out_dir or delete the folder")

    def recorded(self, index: int) -> ShardInfo | None:
        """The sidecar (or final meta entry) of shard ``index``, if one exists."""
        sidecar = self._sidecar(index)
        if sidecar.exists():
            try:
                return ShardInfo(**json.loads(sidecar.read_text()))
            except (OSError, json.JSONDecodeError, TypeError):
                log.warning("%s: unreadable sidecar; the shard will be rendered again", sidecar)
                return None
        final = self._final_meta()
        if final is not None and index < len(final.shards):
            return final.shards[index]
        return None

    def is_complete(self, index: int) -> bool:
        """Whether shard ``index`` exists with the hash recorded for it and the right view range."""
        info = self.recorded(index)
        path = self.shard_path(index)
        if info is None or not path.is_file():
            return False
        if (info.first_view, info.n_views) != self.ranges[index]:
            return False
        if sha256_file(path) != info.sha256:
            log.warning("%s: sha256 differs from its record; rendering it again", path)
            return False
        return True

    def clean_partial(self, index: int) -> None:
        """Remove temporary files a killed writer left for shard ``index`` (only this shard's)."""
        for tmp in self.folder.glob(f".{shard_name(index)}.*.tmp"):
            tmp.unlink(missing_ok=True)

    def record(self, index: int, sha256: str) -> None:
        """Write the sidecar of a shard that was just renamed into place."""
        first, n = self.ranges[index]
        write_json(self._sidecar(index), {"name": shard_name(index), "first_view": first, "n_views": n,
                                          "sha256": sha256})

    def finalize(self) -> PseudoMeta | None:
        """Write ``meta.json`` if every shard is complete; return it (``None`` if some are missing)."""
        infos = []
        for index in range(len(self.ranges)):
            info = self.recorded(index)
            if info is None or not self.shard_path(index).is_file():
                done = sum(self.shard_path(i).is_file() for i in range(len(self.ranges)))
                log.info("%d of %d shards exist; meta.json is written when all do", done, len(self.ranges))
                return None
            infos.append(info)
        meta = PseudoMeta.from_dict({**self.job, "shards": [vars(i) for i in infos]}, folder=self.folder)
        write_json(self.folder / META_NAME, meta.to_dict())
        return meta

    def verify(self) -> list[str]:
        """Re-hash and decode every shard; one line per problem, naming the file (empty if sound)."""
        problems = []
        for index, (first, n) in enumerate(self.ranges):
            info = self.recorded(index)
            path = self.shard_path(index)
            if info is None and not path.exists():
                problems.append(f"{path}: missing")
                continue
            if info is None:
                problems.append(f"{path}: no recorded sha256 (its writer was interrupted)")
                continue
            problem = check_shard(path, info.sha256, first, n, self.meta.image_size, self.meta.fields)
            if problem:
                problems.append(problem)
        return problems
