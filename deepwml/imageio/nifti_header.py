"""The stored fields of a NIfTI-1 or NIfTI-2 header, as the file holds them (before ITK or any reader repairs them),
and a check that the voxel data the header promises is all there and finite.

Read here rather than through nibabel: importing nibabel (which imports pydicom) takes 0.3-0.5 s, about a tenth of a
whole one-scan prediction on a 2-core CPU, for a few fixed fields the NIfTI standard (nifti1.h, nifti2.h) places.
tests/test_nifti_header.py holds the fields and affines read here to nibabel's on many headers.
"""
from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from deepwml.utils.errors import ImageError


def _layout(size: int, fields: list) -> np.dtype:
    """A structured dtype of ``size`` bytes with (name, format, offset) ``fields``."""
    names, formats, offsets = zip(*fields)
    return np.dtype({"names": list(names), "formats": list(formats), "offsets": list(offsets), "itemsize": size})


#: (name, little-endian format, offset) of every field, from nifti1.h and nifti2.h (the names shared by both hold the
#: same quantity, so deepwml.imageio.itk_nifti copies a NIfTI-2 header into NIfTI-1 by name)
NIFTI1 = _layout(348, [("sizeof_hdr", "<i4", 0), ("data_type", "S10", 4), ("db_name", "S18", 14), ("extents", "<i4", 32),
                       ("session_error", "<i2", 36), ("regular", "S1", 38), ("dim_info", "u1", 39), ("dim", ("<i2", 8), 40),
                       ("intent_p1", "<f4", 56), ("intent_p2", "<f4", 60), ("intent_p3", "<f4", 64),
                       ("intent_code", "<i2", 68), ("datatype", "<i2", 70), ("bitpix", "<i2", 72),
                       ("slice_start", "<i2", 74), ("pixdim", ("<f4", 8), 76), ("vox_offset", "<f4", 108),
                       ("scl_slope", "<f4", 112), ("scl_inter", "<f4", 116), ("slice_end", "<i2", 120),
                       ("slice_code", "u1", 122), ("xyzt_units", "u1", 123), ("cal_max", "<f4", 124),
                       ("cal_min", "<f4", 128), ("slice_duration", "<f4", 132), ("toffset", "<f4", 136),
                       ("glmax", "<i4", 140), ("glmin", "<i4", 144), ("descrip", "S80", 148), ("aux_file", "S24", 228),
                       ("qform_code", "<i2", 252), ("sform_code", "<i2", 254), ("quatern", ("<f4", 3), 256),
                       ("qoffset", ("<f4", 3), 268), ("srow", ("<f4", (3, 4)), 280), ("intent_name", "S16", 328),
                       ("magic", "S4", 344)])
NIFTI2 = _layout(540, [("sizeof_hdr", "<i4", 0), ("magic", "S8", 4), ("datatype", "<i2", 12), ("bitpix", "<i2", 14),
                       ("dim", ("<i8", 8), 16), ("intent_p1", "<f8", 80), ("intent_p2", "<f8", 88),
                       ("intent_p3", "<f8", 96), ("pixdim", ("<f8", 8), 104), ("vox_offset", "<i8", 168),
                       ("scl_slope", "<f8", 176), ("scl_inter", "<f8", 184), ("cal_max", "<f8", 192),
                       ("cal_min", "<f8", 200), ("slice_duration", "<f8", 208), ("toffset", "<f8", 216),
                       ("slice_start", "<i8", 224), ("slice_end", "<i8", 232), ("descrip", "S80", 240),
                       ("aux_file", "S24", 320), ("qform_code", "<i4", 344), ("sform_code", "<i4", 348),
                       ("quatern", ("<f8", 3), 352), ("qoffset", ("<f8", 3), 376), ("srow", ("<f8", (3, 4)), 400),
                       ("slice_code", "<i4", 496), ("xyzt_units", "<i4", 500), ("intent_code", "<i4", 504),
                       ("intent_name", "S16", 508), ("dim_info", "u1", 524)])
#: millimetres per spatial unit of xyzt_units (nifti1.h NIFTI_UNITS_METER, NIFTI_UNITS_MICRON); others are mm
SPATIAL_UNIT_MM = {1: 1000.0, 3: 0.001}
#: NIfTI datatype codes of floating-point voxels (a NaN or Inf among them is an error) and their numpy kinds
FLOAT_DATATYPES = {16: "f4", 64: "f8", 32: "c8", 1792: "c16"}


@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI header that geometry and voxel checks use, as stored."""

    version: int  # 1 or 2
    byte_order: str  # '<' or '>'
    dim: np.ndarray  # dim[0..7]
    datatype: int
    bitpix: int
    pixdim: np.ndarray  # pixdim[0..7] (pixdim[0]: qfac)
    vox_offset: int
    qform_code: int
    sform_code: int
    quatern: np.ndarray  # b, c, d
    qoffset: np.ndarray  # x, y, z
    srow: np.ndarray  # 3 × 4
    xyzt_units: int = 0  # bits 0-2: the spatial unit (1 metre, 2 mm, 3 micron; 0 unknown, read as mm)

    @property
    def mm_per_unit(self) -> float:
        """Millimetres per unit of pixdim, qoffset and srow: ITK reads a header in metres or microns into mm."""
        return SPATIAL_UNIT_MM.get(self.xyzt_units & 0x07, 1.0)

    def shape(self, path: Path) -> tuple:
        """The voxel array's dimensions, dim[1..dim[0]]; an implausible dim is an error naming ``path``."""
        n = int(self.dim[0])
        if not 1 <= n <= 7 or np.any(self.dim[1:n + 1] <= 0):
            raise ImageError(f"the header's dim {[int(d) for d in self.dim]} is not a valid image size", path)
        return tuple(int(d) for d in self.dim[1:n + 1])

    def sform(self) -> np.ndarray:
        """The 4×4 sform affine (RAS) the srow fields store."""
        affine = np.eye(4)
        affine[:3] = self.srow
        return affine

    def qform(self) -> np.ndarray:
        """The 4×4 qform affine (RAS) of the quaternion, offsets and pixdim, as nifti1.h defines it (a quaternion
        whose b, c, d are too long for a real rotation is normalised, as the NIfTI library ITK reads with does)."""
        b, c, d = (float(v) for v in self.quatern)
        a = 1.0 - (b * b + c * c + d * d)
        if a < 1e-7:
            norm = 1.0 / np.sqrt(b * b + c * c + d * d)
            b, c, d, a = b * norm, c * norm, d * norm, 0.0
        else:
            a = float(np.sqrt(a))
        rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                             [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                             [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
        qfac = -1.0 if self.pixdim[0] < 0 else 1.0
        affine = np.eye(4)
        affine[:3, :3] = rotation * np.array([self.pixdim[1], self.pixdim[2], self.pixdim[3] * qfac], dtype=float)
        affine[:3, 3] = self.qoffset
        return affine


def first_bytes(path: Path, n: int) -> bytes:
    """Up to ``n`` bytes of the file, decompressed when its name ends in .gz; a stream cut short gives what it holds."""
    with open(path, "rb") as f:
        if not path.name.lower().endswith(".gz"):
            return f.read(n)
        inflate = zlib.decompressobj(wbits=31)  # gzip wrapping
        out, pending = b"", b""
        while len(out) < n:
            pending = pending or f.read(1 << 16)
            if not pending:
                break
            out += inflate.decompress(pending, n - len(out))
            if inflate.eof:  # one gzip member ended; a file may hold several, each a gzip stream of its own
                pending, inflate = inflate.unused_data, zlib.decompressobj(wbits=31)
            else:
                pending = inflate.unconsumed_tail
        return out[:n]


def read_nifti_header(path: Path) -> NiftiHeader:
    """The stored header of a .nii or .nii.gz; anything shorter than a header or not one is an error naming ``path``."""
    try:
        raw = first_bytes(path, 540)
    except (OSError, zlib.error) as e:
        raise ImageError(f"unreadable image header ({str(e).splitlines()[0][:200]})", path) from None
    if len(raw) < NIFTI1.itemsize:
        raise ImageError(f"unreadable image header (truncated or not NIfTI: the file holds {len(raw)} bytes, less than "
                         "a NIfTI header)", path)
    sizes = {int.from_bytes(raw[:4], "little"): "<", int.from_bytes(raw[:4], "big"): ">"}
    version = 2 if 540 in sizes else 1 if 348 in sizes else 0
    if not version:
        raise ImageError(f"unreadable image header (its size field is {min(sizes)}, neither NIfTI-1's 348 nor "
                         "NIfTI-2's 540)", path)
    order = sizes[540 if version == 2 else 348]
    layout = (NIFTI2 if version == 2 else NIFTI1).newbyteorder(order)
    if len(raw) < layout.itemsize:
        raise ImageError(f"unreadable image header (the file holds {len(raw)} bytes, less than a NIfTI-2 header)", path)
    h = np.frombuffer(raw, dtype=layout, count=1)[0]
    vox_offset = float(h["vox_offset"])
    return NiftiHeader(version=version, byte_order=order, dim=np.asarray(h["dim"], dtype=np.int64),
                       datatype=int(h["datatype"]), bitpix=int(h["bitpix"]), pixdim=np.asarray(h["pixdim"], dtype=float),
                       vox_offset=int(vox_offset) if np.isfinite(vox_offset) else -1, qform_code=int(h["qform_code"]),
                       sform_code=int(h["sform_code"]), quatern=np.asarray(h["quatern"], dtype=float),
                       qoffset=np.asarray(h["qoffset"], dtype=float), srow=np.asarray(h["srow"], dtype=float),
                       xyzt_units=int(h["xyzt_units"]))


def check_nifti_voxels(path: Path, header: Optional[NiftiHeader] = None) -> None:
    """Every voxel the header promises is in the file (ITK's NIfTI reader zero-fills a truncated file without a word),
    and none of floating-point data is NaN or Inf; errors name ``path``."""
    header = header or read_nifti_header(path)
    n_voxels = int(np.prod(header.shape(path)))
    if header.vox_offset < 0:
        raise ImageError("the header's vox_offset (where the voxel data starts) is not a byte offset", path)
    needed = header.vox_offset + (n_voxels * max(header.bitpix, 1) + 7) // 8
    try:
        if path.name.lower().endswith(".gz"):
            with open(path, "rb") as f:
                data = gzip.decompress(f.read())  # one C call that lets other threads run; a cut stream raises EOFError
            available = len(data)
        else:
            data, available = None, path.stat().st_size
    except (OSError, EOFError, zlib.error) as e:
        raise ImageError(f"unreadable or truncated image ({str(e).splitlines()[0][:200]})", path) from None
    if available < needed:
        raise ImageError(f"truncated image: the header promises {needed} bytes, the file holds {available}", path)
    kind = FLOAT_DATATYPES.get(header.datatype)
    if kind is None:
        return
    dtype = np.dtype(kind).newbyteorder(header.byte_order)
    values = (np.frombuffer(data, dtype=dtype, count=n_voxels, offset=header.vox_offset) if data is not None
              else np.memmap(path, dtype=dtype, mode="r", offset=header.vox_offset, shape=(n_voxels,)))
    n_bad = int(np.count_nonzero(~np.isfinite(values)))
    if n_bad:
        raise ImageError(f"contains {n_bad} NaN/Inf voxels", path)
