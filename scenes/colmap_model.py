"""Readers of COLMAP sparse models (``cameras``, ``images``, ``points3D``; ``.bin`` or ``.txt``), numpy only.

Written from the format's specification (https://colmap.github.io/format.html); pycolmap is not
needed. Binary files are little-endian: ``cameras.bin`` holds a ``uint64`` count, then per camera
``int32 id, int32 model id, uint64 width, uint64 height, float64 params[n]``; ``images.bin`` per image
``uint32 id, float64 qvec[4] (w, x, y, z), float64 tvec[3], uint32 camera id, NUL-terminated name,
uint64 n, n x (float64 x, float64 y, int64 point3D id)``; ``points3D.bin`` per point ``uint64 id,
float64 xyz[3], uint8 rgb[3], float64 error, uint64 n, n x (uint32 image id, uint32 point2D index)``.
The text files hold the same fields, one camera or point per line and two lines per image.

An image's ``qvec``/``tvec`` map world points into its camera (``x_cam = R x_world + t``) in COLMAP's
camera frame, which is OpenCV's (+X right, +Y down, looking along +Z). Pixel coordinates put the
centre of the top-left pixel at ``(0.5, 0.5)``, as :mod:`core.cameras` does, so ``cx``/``cy`` carry
over unchanged. The ``rigs``/``frames`` files of COLMAP 3.12+ are not read: an image's pose is in
``images`` either way.

Any unusable input raises :class:`~core.errors.SceneError` naming the file (and the line or byte).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import SceneError

# model name -> (model id, number of parameters), as COLMAP numbers them
CAMERA_MODELS: dict[str, tuple[int, int]] = {
    "SIMPLE_PINHOLE": (0, 3), "PINHOLE": (1, 4), "SIMPLE_RADIAL": (2, 4), "RADIAL": (3, 5),
    "OPENCV": (4, 8), "OPENCV_FISHEYE": (5, 8), "FULL_OPENCV": (6, 12), "FOV": (7, 5),
    "SIMPLE_RADIAL_FISHEYE": (8, 4), "RADIAL_FISHEYE": (9, 5), "THIN_PRISM_FISHEYE": (10, 12),
    "RAD_TAN_THIN_PRISM_FISHEYE": (11, 16), "SIMPLE_DIVISION": (12, 4), "DIVISION": (13, 5),
    "SIMPLE_FISHEYE": (14, 3), "FISHEYE": (15, 4), "EUCM": (16, 6), "EQUIRECTANGULAR": (17, 2),
}
MODEL_NAMES = {model_id: name for name, (model_id, _) in CAMERA_MODELS.items()}
# the models this project reads without pycolmap: pinhole plus at most k1, k2, p1, p2
PINHOLE_LIKE = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
MODEL_FILES = ("cameras", "images", "points3D")


@dataclass
class ColmapCamera:
    """One camera: ``params`` in COLMAP's order for ``model`` (e.g. OPENCV: fx fy cx cy k1 k2 p1 p2)."""

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # [n] float64


@dataclass
class ColmapImage:
    """One registered image: its world-to-camera rotation (unit quaternion w, x, y, z) and translation."""

    image_id: int
    name: str
    camera_id: int
    qvec: np.ndarray  # [4]
    tvec: np.ndarray  # [3]

    def world_to_camera(self) -> np.ndarray:
        """``[4, 4]`` float64 world-to-camera transform (OpenCV camera frame)."""
        w2c = np.eye(4)
        w2c[:3, :3] = quaternion_to_matrix(self.qvec)
        w2c[:3, 3] = self.tvec
        return w2c


@dataclass
class ColmapModel:
    """A sparse model: cameras and images by id, 3D points, and which image observes which point.

    Attributes:
        observations: ``[M, 2]`` int64 rows ``(image id, row of points)``, one per track element.
    """

    files: dict[str, Path]  # "cameras", "images", "points3D" -> the file read
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: np.ndarray  # [P, 3]
    observations: np.ndarray  # [M, 2]

    def points_by_image(self) -> dict[int, np.ndarray]:
        """Image id -> ``[k, 3]`` the 3D points it observes (each once); images observing none are absent."""
        obs = np.unique(self.observations, axis=0)  # sorted by image id, then point
        ids, starts = np.unique(obs[:, 0], return_index=True)
        return {int(i): self.points[rows] for i, rows in zip(ids, np.split(obs[:, 1], starts[1:]))}


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """``[3, 3]`` rotation of the quaternion ``q [4]`` (w, x, y, z; normalised here)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def model_files(root: Path) -> dict[str, Path]:
    """The model's three files: the binary set if complete, else the text set.

    Raises:
        SceneError: naming the folder, or the first file missing from the more complete set.
    """
    if not root.is_dir():
        raise SceneError(f"{root}: COLMAP model folder not found")
    sets = {ext: {name: root / f"{name}.{ext}" for name in MODEL_FILES} for ext in ("bin", "txt")}
    for files in sets.values():
        if all(p.is_file() for p in files.values()):
            return files
    best = max(sets.values(), key=lambda files: sum(p.is_file() for p in files.values()))
    missing = next(p for p in best.values() if not p.is_file())
    raise SceneError(f"{missing}: COLMAP model file not found (need cameras, images and points3D, "
                     f"all .bin or all .txt)")


def read_model(root: str | Path) -> ColmapModel:
    """Read and check a sparse model folder (binary files preferred when both sets are complete)."""
    files = model_files(Path(root))
    binary = files["cameras"].suffix == ".bin"
    cameras = (_read_cameras_bin if binary else _read_cameras_txt)(files["cameras"])
    images = (_read_images_bin if binary else _read_images_txt)(files["images"])
    points, observations = (_read_points_bin if binary else _read_points_txt)(files["points3D"])
    names: set[str] = set()
    for image in images.values():
        if image.camera_id not in cameras:
            raise SceneError(f"{files['images']}: image {image.image_id} ({image.name}) references camera "
                             f"{image.camera_id}, which {files['cameras'].name} does not have")
        if image.name in names:
            raise SceneError(f"{files['images']}: image name {image.name!r} appears twice")
        names.add(image.name)
    return ColmapModel(files, cameras, images, points, observations)


def _check_camera(path: Path, where: str, camera: ColmapCamera) -> ColmapCamera:
    n_params = CAMERA_MODELS[camera.model][1]
    if len(camera.params) != n_params:
        raise SceneError(f"{path}: {where}: {camera.model} takes {n_params} parameters, "
                         f"got {len(camera.params)}")
    if camera.width <= 0 or camera.height <= 0 or not np.isfinite(camera.params).all():
        raise SceneError(f"{path}: {where}: camera {camera.camera_id} needs a positive size and finite "
                         f"parameters")
    return camera


def _check_image(path: Path, where: str, image: ColmapImage) -> ColmapImage:
    finite = np.isfinite(image.qvec).all() and np.isfinite(image.tvec).all()
    if not finite or np.linalg.norm(image.qvec) < 1e-8:
        raise SceneError(f"{path}: {where}: image {image.image_id} has no valid pose")
    if not image.name:
        raise SceneError(f"{path}: {where}: image {image.image_id} has no name")
    return image


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of a text model file, comments dropped, blank lines kept (image points)."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise SceneError(f"{path}: not a text file (UTF-8)") from None
    except OSError as exc:
        raise SceneError(f"{path}: cannot read ({exc.strerror})") from None
    lines = enumerate(text.splitlines())
    return [(i + 1, line.strip()) for i, line in lines if not line.lstrip().startswith("#")]


def _read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cameras: dict[int, ColmapCamera] = {}
    for lineno, line in _data_lines(path):
        if not line:
            continue
        where = f"line {lineno}"
        tokens = line.split()
        if len(tokens) < 4 or tokens[1] not in CAMERA_MODELS:
            raise SceneError(f"{path}: {where}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...' with a "
                             f"COLMAP model name, got {line[:60]!r}")
        try:
            camera = ColmapCamera(int(tokens[0]), tokens[1], int(tokens[2]), int(tokens[3]),
                                  np.array([float(t) for t in tokens[4:]]))
        except ValueError:
            raise SceneError(f"{path}: {where}: camera fields are not numbers") from None
        if camera.camera_id in cameras:
            raise SceneError(f"{path}: {where}: camera {camera.camera_id} appears twice")
        cameras[camera.camera_id] = _check_camera(path, where, camera)
    return cameras


def _read_images_txt(path: Path) -> dict[int, ColmapImage]:
    images: dict[int, ColmapImage] = {}
    lines = _data_lines(path)
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        if not line:
            i += 1
            continue
        where = f"line {lineno}"
        tokens = line.split(maxsplit=9)
        if len(tokens) < 10:
            raise SceneError(f"{path}: {where}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', "
                             f"got {line[:60]!r}")
        try:
            numbers = np.array([float(t) for t in tokens[1:8]])
            image = ColmapImage(int(tokens[0]), tokens[9], int(tokens[8]), numbers[:4], numbers[4:])
        except ValueError:
            raise SceneError(f"{path}: {where}: image fields are not numbers") from None
        if i + 1 < len(lines) and len(lines[i + 1][1].split()) % 3:
            raise SceneError(f"{path}: line {lines[i + 1][0]}: the points of image {image.image_id} are not "
                             f"(X, Y, POINT3D_ID) triples")
        if image.image_id in images:
            raise SceneError(f"{path}: {where}: image {image.image_id} appears twice")
        images[image.image_id] = _check_image(path, where, image)
        i += 2  # the POINTS2D line (possibly blank) follows each image line
    return images


def _read_points_txt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    xyz: list[list[float]] = []
    obs: list[tuple[int, int]] = []
    for lineno, line in _data_lines(path):
        if not line:
            continue
        tokens = line.split()
        if len(tokens) < 8 or (len(tokens) - 8) % 2:
            raise SceneError(f"{path}: line {lineno}: expected 'POINT3D_ID X Y Z R G B ERROR' and "
                             f"(IMAGE_ID, POINT2D_IDX) pairs, got {line[:60]!r}")
        try:
            xyz.append([float(t) for t in tokens[1:4]])
            obs.extend((int(t), len(xyz) - 1) for t in tokens[8::2])
        except ValueError:
            raise SceneError(f"{path}: line {lineno}: point fields are not numbers") from None
    return _points_arrays(path, xyz, obs)


def _points_arrays(path: Path, xyz: list, obs: list | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    points = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    if not np.isfinite(points).all():
        raise SceneError(f"{path}: a 3D point is not finite")
    return points, np.asarray(obs, dtype=np.int64).reshape(-1, 2)


class _Reader:
    """Little-endian reads from a file's bytes; running past the end is a :class:`SceneError`."""

    def __init__(self, path: Path) -> None:
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise SceneError(f"{path}: cannot read ({exc.strerror})") from None
        self.path, self.pos = path, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise SceneError(f"{self.path}: truncated or corrupt: {n} bytes needed at byte {self.pos} for "
                             f"{what}, the file has {len(self.data)}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        if count > (len(self.data) - self.pos) // item:
            self.take(count * item, what)  # raises with the sizes
        return np.frombuffer(self.take(count * item, what), dtype=dtype)

    def name(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise SceneError(f"{self.path}: truncated or corrupt: {what} has no end (NUL) after byte "
                             f"{self.pos}")
        start = self.pos
        raw = self.take(end - self.pos + 1, what)[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SceneError(f"{self.path}: corrupt: {what} at byte {start} is not UTF-8") from None

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise SceneError(f"{self.path}: corrupt: {len(self.data) - self.pos} unexpected bytes after the "
                             f"last record (byte {self.pos})")


def _read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    r = _Reader(path)
    cameras: dict[int, ColmapCamera] = {}
    (count,) = r.unpack("Q", "the camera count")
    for k in range(count):
        camera_id, model_id, width, height = r.unpack("iiQQ", f"camera {k}")
        if model_id not in MODEL_NAMES:
            raise SceneError(f"{path}: corrupt: camera {camera_id} has unknown model id {model_id}")
        model = MODEL_NAMES[model_id]
        params = r.array("<f8", CAMERA_MODELS[model][1], f"camera {camera_id}'s parameters").astype(float)
        if camera_id in cameras:
            raise SceneError(f"{path}: corrupt: camera {camera_id} appears twice")
        cameras[camera_id] = _check_camera(path, f"camera {camera_id}", ColmapCamera(
            camera_id, model, width, height, params))
    r.finish()
    return cameras


def _read_images_bin(path: Path) -> dict[int, ColmapImage]:
    r = _Reader(path)
    images: dict[int, ColmapImage] = {}
    (count,) = r.unpack("Q", "the image count")
    for k in range(count):
        fields = r.unpack("I7dI", f"image {k}")
        name = r.name(f"image {fields[0]}'s name")
        (n_points,) = r.unpack("Q", f"image {fields[0]}'s point count")
        r.array("<f8", 3 * n_points, f"image {fields[0]}'s {n_points} points")  # x, y, id: not needed
        image = ColmapImage(fields[0], name, fields[8], np.array(fields[1:5]), np.array(fields[5:8]))
        if image.image_id in images:
            raise SceneError(f"{path}: corrupt: image {image.image_id} appears twice")
        images[image.image_id] = _check_image(path, f"image {image.image_id}", image)
    r.finish()
    return images


def _read_points_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    r = _Reader(path)
    (count,) = r.unpack("Q", "the point count")
    xyz: list[tuple[float, ...]] = []
    obs: list[np.ndarray] = []
    for k in range(count):
        fields = r.unpack("Q3d3BdQ", f"point {k}")
        track = r.array("<u4", 2 * fields[8], f"point {fields[0]}'s track of {fields[8]}").reshape(-1, 2)
        obs.append(np.stack([track[:, 0].astype(np.int64), np.full(len(track), len(xyz))], 1))
        xyz.append(fields[1:4])
    r.finish()
    return _points_arrays(path, xyz, np.concatenate(obs) if obs else [])


def pinhole(camera: ColmapCamera) -> tuple[float, float, float, float]:
    """``fx, fy, cx, cy`` of a camera of one of :data:`PINHOLE_LIKE` (its distortion left out)."""
    p = camera.params
    if camera.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):  # one focal length
        return float(p[0]), float(p[0]), float(p[1]), float(p[2])
    if camera.model in ("PINHOLE", "OPENCV"):
        return float(p[0]), float(p[1]), float(p[2]), float(p[3])
    raise ValueError(f"camera model {camera.model} is not one of {PINHOLE_LIKE}")


def distortion_pixels(camera: ColmapCamera) -> float:
    """Largest shift, in pixels, that the camera's lens distortion makes at the image's corners and edges.

    ``0`` for the pinhole models, ``inf`` for the models outside :data:`PINHOLE_LIKE` (fisheye and
    others: never negligible).
    """
    if camera.model not in PINHOLE_LIKE:
        return math.inf
    fx, fy, cx, cy = pinhole(camera)
    one_focal = camera.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
    k1, k2, p1, p2 = [*camera.params[3 if one_focal else 4:], 0.0, 0.0, 0.0, 0.0][:4]  # in this order
    u = np.array([0.0, camera.width / 2, camera.width] * 3)
    v = np.repeat([0.0, camera.height / 2, camera.height], 3)
    x, y = (u - cx) / fx, (v - cy) / fy
    r2 = x * x + y * y
    radial = k1 * r2 + k2 * r2 * r2
    dx = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    dy = y * radial + 2 * p2 * x * y + p1 * (r2 + 2 * y * y)
    return float(np.hypot(fx * dx, fy * dy).max())
