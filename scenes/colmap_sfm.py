"""Structure from motion with pycolmap (CPU): SIFT features, matching, incremental mapping.

pycolmap is an optional extra (``pip install -e '.[colmap]'``) and is imported only when a function
here runs. :func:`run_sfm` leaves COLMAP's database and models in a work folder and returns the
folder of the largest reconstruction (COLMAP's binary sparse model), which
:func:`scenes.colmap_model.read_model` reads like any other.

Matching: exhaustive (every pair) up to ``EXHAUSTIVE_MAX_PHOTOS`` photos; above that, sequential in
name order (each photo against the next ``SEQUENTIAL_OVERLAP`` and at quadratically growing
distances), which needs no vocabulary tree but assumes the photos were taken in order (a walk around
the object); ``matcher="exhaustive"`` forces every pair.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from core.errors import UserError

log = logging.getLogger(__name__)

EXHAUSTIVE_MAX_PHOTOS = 150
SEQUENTIAL_OVERLAP = 20
CAMERA_MODES = ("auto", "single", "per_image")
MATCHERS = ("auto", "exhaustive", "sequential")
SFM_CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
INSTALL_HINT = "pip install -e '.[colmap]' (pycolmap==4.2.1)"


@dataclass
class SfmOptions:
    """Choices of a COLMAP run.

    Attributes:
        camera_model: COLMAP's camera model for the photos (``SIMPLE_RADIAL``, COLMAP's default, fits
            most lenses; ``PINHOLE`` for images known to have no distortion).
        camera_mode: ``single`` (all photos share one camera), ``per_image``, or ``auto``: single
            when every photo has the same size.
        matcher: ``auto`` (see the module docstring), ``exhaustive`` or ``sequential``.
        verbose: show COLMAP's own log lines.
        seed: COLMAP's random seed.
    """

    camera_model: str = "SIMPLE_RADIAL"
    camera_mode: str = "auto"
    matcher: str = "auto"
    verbose: bool = False
    seed: int = 0


@dataclass
class SfmResult:
    """The largest reconstruction's folder and counts for the log and the report."""

    model_dir: Path
    n_photos: int
    n_registered: int
    n_reconstructions: int
    seconds: dict[str, float]


def import_pycolmap(why: str) -> ModuleType:
    """pycolmap, or a :class:`UserError` saying that ``why`` needs it and how to install it."""
    try:
        import pycolmap
    except ImportError:
        raise UserError(f"{why} needs pycolmap, which is not installed: {INSTALL_HINT}") from None
    return pycolmap


def run_sfm(photos_dir: Path, names: list[str], work: Path, mask_dir: Path | None,
            sizes: set[tuple[int, int]], opts: SfmOptions) -> SfmResult:
    """Run COLMAP on the photos ``names`` (relative to ``photos_dir``) inside ``work``.

    Args:
        photos_dir: folder of the photos.
        names: photo file names relative to ``photos_dir``, in capture order.
        work: empty folder for the database and the models.
        mask_dir: ``<mask_dir>/<name>.png`` per photo (0 = no features there), or ``None``.
        sizes: the distinct ``(width, height)`` of the photos (for ``camera_mode="auto"``).
        opts: model, camera sharing, matcher.

    Returns:
        The largest reconstruction (most registered images); ``n_registered`` is 0 when COLMAP made none.
    """
    pycolmap = import_pycolmap("running COLMAP")
    pycolmap.logging.minloglevel = 0 if opts.verbose else 3  # 3: fatal only; our log says what happened
    pycolmap.set_random_seed(opts.seed)
    database, cpu = work / "database.db", pycolmap.Device.cpu
    seconds: dict[str, float] = {}

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = opts.camera_model
    if mask_dir is not None:
        reader.mask_path = str(mask_dir)
    single = opts.camera_mode == "single" or (opts.camera_mode == "auto" and len(sizes) == 1)
    mode = pycolmap.CameraMode.SINGLE if single else pycolmap.CameraMode.PER_IMAGE
    with _phase(photos_dir, "feature extraction", seconds, "features", f"SIFT on {len(names)} photos"):
        pycolmap.extract_features(database, photos_dir, image_names=names, camera_mode=mode,
                                  reader_options=reader, device=cpu)
    db_names, n_keypoints = _database_counts(pycolmap, database)
    unread = sorted(set(names) - db_names)
    log.info("features: %d photos, %d SIFT keypoints (%.0f per photo)%s, %s camera [%.1f s]", len(db_names),
             n_keypoints, n_keypoints / max(len(db_names), 1), ", masked" if mask_dir else "",
             "one" if single else "a per-photo", seconds["features"])
    if unread:
        log.warning("COLMAP could not read %d photo(s): %s", len(unread), ", ".join(unread[:5]))

    matcher = opts.matcher if opts.matcher != "auto" else (
        "exhaustive" if len(names) <= EXHAUSTIVE_MAX_PHOTOS else "sequential")
    with _phase(photos_dir, "matching", seconds, "matching", f"{matcher} matching"):
        if matcher == "exhaustive":
            pycolmap.match_exhaustive(database, device=cpu)
        else:
            pairing = pycolmap.SequentialPairingOptions()
            pairing.overlap, pairing.quadratic_overlap = SEQUENTIAL_OVERLAP, True
            pairing.loop_detection = False  # needs a vocabulary tree file
            pycolmap.match_sequential(database, pairing_options=pairing, device=cpu)
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.random_seed = opts.seed
    n_pairs, n_verified = _pair_counts(pycolmap, database, mapping.min_num_matches)
    log.info("matching: %s, %d pairs, %d with >= %d verified matches [%.1f s]", matcher, n_pairs, n_verified,
             mapping.min_num_matches, seconds["matching"])

    (work / "sparse").mkdir()
    with _phase(photos_dir, "mapping", seconds, "mapping", "incremental mapping"):
        reconstructions = pycolmap.incremental_mapping(database, photos_dir, work / "sparse", mapping)
    if not reconstructions:
        log.info("mapping: no reconstruction [%.1f s]", seconds["mapping"])
        return SfmResult(work / "sparse", len(names), 0, 0, seconds)
    index, best = max(reconstructions.items(), key=lambda item: item[1].num_reg_images())
    log.info("mapping: %d reconstruction(s); the largest registers %d of %d photos, %d points, "
             "reprojection error %.2f px [%.1f s]", len(reconstructions), best.num_reg_images(), len(names),
             best.num_points3D(), best.compute_mean_reprojection_error(), seconds["mapping"])
    model_dir = work / "sparse" / "largest"
    model_dir.mkdir()
    best.write(model_dir)  # COLMAP's binary format
    return SfmResult(model_dir, len(names), int(best.num_reg_images()), len(reconstructions), seconds)


class _phase:
    """Announce a COLMAP call, time it into ``seconds[key]``, turn its errors into one-line UserErrors."""

    def __init__(self, photos_dir: Path, what: str, seconds: dict[str, float], key: str, doing: str) -> None:
        self.photos_dir, self.what, self.seconds, self.key, self.doing = photos_dir, what, seconds, key, doing

    def __enter__(self) -> None:
        log.info("%s ...", self.doing)
        self.start = time.perf_counter()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.seconds[self.key] = time.perf_counter() - self.start
        if isinstance(exc, (RuntimeError, ValueError)) and not isinstance(exc, UserError):
            raise UserError(f"{self.photos_dir}: COLMAP {self.what} failed: {exc}") from None


def _database_counts(pycolmap: ModuleType, database: Path) -> tuple[set[str], int]:
    db = pycolmap.Database.open(database)
    try:
        return {image.name for image in db.read_all_images()}, int(db.num_keypoints())
    finally:
        db.close()


def _pair_counts(pycolmap: ModuleType, database: Path, min_matches: int) -> tuple[int, int]:
    """Matched pairs, and pairs whose geometric verification kept at least ``min_matches`` matches."""
    db = pycolmap.Database.open(database)
    try:
        _, geometries = db.read_two_view_geometries()
        verified = sum(len(g.inlier_matches) >= min_matches for g in geometries)
        return int(db.num_matched_image_pairs()), verified
    finally:
        db.close()
