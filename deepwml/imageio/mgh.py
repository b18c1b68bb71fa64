"""FreeSurfer's MGH format (``.mgh``, and ``.mgz``: the same bytes gzipped), read and written without ITK, which has
no reader for it.

FreeSurfer, SynthSeg and SAMSEG write their volumes so, and a FLAIR that went through them (``mri_convert``,
``recon-all -FLAIR``) comes as ``.mgz``. The layout (FreeSurfer's mghRead/mghWrite, all big-endian): a 284-byte
header (version 1; width, height, depth, frames; data type; dof; a flag saying whether the geometry follows; voxel
sizes; the three axis directions in RAS; the RAS position of the volume's centre), then the voxels with the first
axis fastest, then optional scan parameters and tags, which are not needed here and are not written.

The geometry is FreeSurfer's vox2ras: column j of the direction matrix times voxel size j maps voxel steps to RAS,
and voxel (width, height, depth) / 2 lies at the centre's RAS position. ITK's LPS is that with the first two world
axes negated. A header without geometry (flag 0) is refused: FreeSurfer would then assume 1 mm voxels in a
conformed orientation, which no clinical FLAIR has.
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Tuple

import numpy as np

from deepwml.imageio.geometry import Geometry
from deepwml.utils.errors import ImageError

#: the fixed header before the voxels (fields, then unused space)
HEADER_BYTES = 284
HEADER = np.dtype([("version", ">i4"), ("dims", ">i4", (4,)), ("type", ">i4"), ("dof", ">i4"), ("good_ras", ">i2"),
                   ("delta", ">f4", (3,)), ("mdc", ">f4", (3, 3)), ("c_ras", ">f4", (3,))])
#: FreeSurfer's data type codes and the voxel types they store
TYPES = {0: np.dtype(">u1"), 1: np.dtype(">i4"), 3: np.dtype(">f4"), 4: np.dtype(">i2")}
CODES = {dtype.newbyteorder("="): code for code, dtype in TYPES.items()}
#: RAS <-> LPS: the first two world axes negated
_FLIP = np.diag([-1.0, -1.0, 1.0])


def is_mgh(path: Path) -> bool:
    """Whether the name ends in .mgh or .mgz."""
    return Path(path).name.lower().endswith((".mgh", ".mgz"))


def _open(path: Path):
    """The file's bytes as a stream, unzipped for .mgz."""
    return gzip.open(path, "rb") if Path(path).name.lower().endswith(".mgz") else open(path, "rb")


def _header(raw: bytes, path: Path) -> np.void:
    """The parsed header of ``raw`` (at least HEADER_BYTES long), checked for what a 3D scan needs."""
    if len(raw) < HEADER_BYTES:
        raise ImageError(f"is not an MGH file: {len(raw)} bytes, shorter than its {HEADER_BYTES}-byte header", path)
    header = np.frombuffer(raw, HEADER, count=1)[0]
    if int(header["version"]) != 1:
        raise ImageError(f"is not an MGH file (version field {int(header['version'])}, expected 1)", path)
    width, height, depth, frames = (int(v) for v in header["dims"])
    if min(width, height, depth, frames) < 1:
        raise ImageError(f"MGH header gives size {width} x {height} x {depth} with {frames} frame(s); each must be >= 1", path)
    if frames != 1:
        raise ImageError(f"is 4D: {frames} frames of {width} x {height} x {depth}; expected one 3D stack of slices "
                         "(mri_convert --frame N splits one out)", path)
    if int(header["type"]) not in TYPES:
        raise ImageError(f"MGH data type {int(header['type'])} is not one DeepWML reads (0 uchar, 1 int, 3 float, "
                         "4 short)", path)
    if int(header["good_ras"]) <= 0:
        raise ImageError("MGH header holds no voxel size or orientation (goodRASflag 0): FreeSurfer would assume 1 mm "
                         "voxels in a conformed orientation; convert the scan from its DICOM or NIfTI original", path)
    return header


def _geometry(header: np.void) -> Geometry:
    """The ITK (LPS) geometry of a parsed header."""
    size = np.array(header["dims"][:3], float)
    spacing = np.array(header["delta"], float)
    directions = np.array(header["mdc"], float).T  # the header stores one axis's direction per row
    centre = np.array(header["c_ras"], float)
    origin_ras = centre - directions @ (spacing * size / 2.0)
    return Geometry(tuple(int(s) for s in size), tuple(spacing), tuple(_FLIP @ origin_ras),
                    tuple((_FLIP @ directions).ravel()))


def read_mgh_geometry(path: Path) -> Geometry:
    """The geometry in an MGH/MGZ file's header (its voxels are not read)."""
    try:
        with _open(path) as stream:
            raw = stream.read(HEADER_BYTES)
    except (OSError, EOFError) as e:
        raise ImageError(f"unreadable MGH file ({e})", path) from None
    return _geometry(_header(raw, path))


def read_mgh(path: Path) -> Tuple[np.ndarray, Geometry]:
    """(voxels in numpy z, y, x order and the file's own type, geometry) of an MGH/MGZ file."""
    try:
        with _open(path) as stream:
            raw = stream.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ImageError(f"unreadable MGH file ({e})", path) from None
    header = _header(raw, path)
    geometry = _geometry(header)
    dtype = TYPES[int(header["type"])]
    count = int(np.prod(geometry.size))
    available = len(raw) - HEADER_BYTES
    if available < count * dtype.itemsize:
        raise ImageError(f"is truncated: {available} bytes of voxels where its header needs {count * dtype.itemsize}", path)
    voxels = np.frombuffer(raw, dtype, count=count, offset=HEADER_BYTES)
    # the first axis (width) varies fastest: C order over (depth, height, width) is numpy's (z, y, x)
    array = voxels.reshape(tuple(reversed(geometry.size))).astype(dtype.newbyteorder("="))
    return array, geometry


def _stored(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` in a type MGH stores without loss of what it holds (uint8, int16, int32 or float32)."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype in CODES:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    for kind in (np.int16, np.int32):
        if array.size == 0 or (array.min() >= np.iinfo(kind).min and array.max() <= np.iinfo(kind).max):
            return array.astype(kind)
    raise ImageError(f"values {array.min()}..{array.max()} do not fit an MGH file's 32-bit integers", path)


def mgh_bytes(array: np.ndarray, geometry: Geometry, path: Path) -> bytes:
    """An MGH file's bytes (header, voxels) for ``array`` (numpy z, y, x order) on ``geometry``."""
    array = _stored(np.asarray(array), path)
    header = np.zeros(1, HEADER)[0]
    header["version"] = 1
    header["dims"] = (*geometry.size, 1)
    header["type"] = CODES[array.dtype.newbyteorder("=")]
    header["good_ras"] = 1
    spacing = np.array(geometry.spacing, float)
    directions = _FLIP @ geometry.direction_matrix
    header["delta"] = spacing
    header["mdc"] = directions.T
    header["c_ras"] = _FLIP @ np.array(geometry.origin, float) + directions @ (spacing * np.array(geometry.size) / 2.0)
    data = np.ascontiguousarray(array, dtype=TYPES[header["type"]]).tobytes()
    return header.tobytes().ljust(HEADER_BYTES, b"\0") + data


def write_mgh(array: np.ndarray, geometry: Geometry, path: Path, target: Path) -> None:
    """Write ``array`` on ``geometry`` as MGH (gzipped when ``path`` ends in .mgz) into ``target`` (a temporary name
    that the caller renames to ``path``)."""
    data = mgh_bytes(array, geometry, path)
    if Path(path).name.lower().endswith(".mgz"):
        with gzip.open(target, "wb", compresslevel=6) as out:
            out.write(data)
    else:
        Path(target).write_bytes(data)
