"""The NIfTI files ITK's reader would get wrong, handed to it in a form it reads right.

* NIfTI-2: ITK reads NIfTI-1 only. The header is rewritten field by field as NIfTI-1 into a temporary file before the
  same voxel bytes, so a NIfTI-2 scan is read exactly as its NIfTI-1 twin (the same choice of sform or qform, the same
  scaling and data types). Every field a FLAIR scan needs fits NIfTI-1; NIfTI-2 exists for arrays of more than 32767
  voxels along an axis, which are refused with that reason.
* ``scan.nii.gz`` beside a ``scan.nii`` (a copy unzipped with ``gunzip -k`` and then edited, say): the NIfTI library
  ITK reads with looks for the uncompressed name first and silently returns the other file's voxels and header. The
  file asked for is read through a link of its own name in an empty temporary folder.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from deepwml.imageio.nifti_header import NIFTI1, NIFTI2, NiftiHeader, first_bytes, read_nifti_header
from deepwml.utils.errors import ImageError

#: NIfTI-1's voxel data follows its 348-byte header and a 4-byte extension flag (0: no extensions)
NIFTI1_VOX_OFFSET = NIFTI1.itemsize + 4
#: fields that decide where and how bright each voxel is: one that does not fit NIfTI-1 is an error, not dropped
GEOMETRY_FIELDS = ("dim", "pixdim", "quatern", "qoffset", "srow", "scl_slope", "scl_inter")


def nifti1_header(path: Path, header: NiftiHeader) -> bytes:
    """The NIfTI-1 header (with its empty extension flag) holding the NIfTI-2 header's fields of ``path``."""
    source = np.frombuffer(first_bytes(path, NIFTI2.itemsize), dtype=NIFTI2.newbyteorder(header.byte_order), count=1)[0]
    target = np.zeros(1, dtype=NIFTI1.newbyteorder(header.byte_order))[0]
    for name in NIFTI2.names:
        if name in ("sizeof_hdr", "magic", "vox_offset"):
            continue
        value = np.asarray(source[name])
        kind = NIFTI1.fields[name][0].base  # the element type of an array field
        if kind.kind in "iu" and np.any((value < np.iinfo(kind).min) | (value > np.iinfo(kind).max)):
            if name == "dim":
                raise ImageError(f"is a NIfTI-2 image of size {header.shape(path)}; an axis of more than 32767 voxels "
                                 "is beyond the image reader (ITK reads NIfTI-1 only) and beyond any FLAIR scan", path)
            value = value & 0x3F if name == "xyzt_units" else np.zeros_like(value)  # unit bits kept; timing unused
        elif kind.kind == "f":
            narrowed = value.astype(np.float32)
            lost = np.isfinite(value) & ~np.isfinite(narrowed)
            if np.any(lost):
                if name in GEOMETRY_FIELDS:
                    raise ImageError(f"the NIfTI-2 header's {name} {value.tolist()} is beyond single precision, which "
                                     "the image reader (ITK, NIfTI-1 only) holds it in", path)
                value = np.where(lost, 0.0, value)
        target[name] = value
    target["sizeof_hdr"] = NIFTI1.itemsize
    target["vox_offset"] = NIFTI1_VOX_OFFSET
    target["magic"] = b"n+1"
    return target.tobytes() + bytes(4)


def _voxel_bytes(path: Path, header: NiftiHeader) -> bytes:
    """The voxel data of ``path`` as the header places it (check_nifti_voxels has found it all there)."""
    n_bytes = (int(np.prod(header.shape(path))) * max(header.bitpix, 1) + 7) // 8
    try:
        with open(path, "rb") as f:
            if path.name.lower().endswith(".gz"):
                return gzip.decompress(f.read())[header.vox_offset:header.vox_offset + n_bytes]
            f.seek(header.vox_offset)
            return f.read(n_bytes)
    except (OSError, EOFError, zlib.error) as e:
        raise ImageError(f"unreadable or truncated image ({str(e).splitlines()[0][:200]})", path) from None


def _shadowed(path: Path) -> bool:
    """True for a .nii.gz with a .nii of the same stem beside it, which ITK would read instead."""
    name = path.name
    return name.lower().endswith(".nii.gz") and path.with_name(name[:-3]).exists()


@contextlib.contextmanager
def itk_readable(path: Path, voxels: bool = True) -> Iterator[Path]:
    """``path`` itself, or a temporary file that ITK reads as ``path`` should be read: a NIfTI-1 twin of a NIfTI-2
    file (its header alone unless ``voxels``), a link to a .nii.gz a .nii would shadow. Removed on leaving."""
    header = read_nifti_header(path) if path.name.lower().endswith((".nii", ".nii.gz")) else None
    nifti2 = header is not None and header.version == 2
    if not (nifti2 or _shadowed(path)):
        yield path
        return
    folder = Path(tempfile.mkdtemp(prefix="deepwml_itk_"))
    try:
        if nifti2:
            readable = folder / "nifti1.nii"
            with open(readable, "wb") as f:
                f.write(nifti1_header(path, header))
                if voxels:
                    f.write(_voxel_bytes(path, header))
        else:
            readable = folder / path.name
            try:
                os.symlink(path.resolve(), readable)
            except OSError:  # no symbolic links here (some Windows accounts): a copy reads the same
                shutil.copyfile(path, readable)
        yield readable
    finally:
        shutil.rmtree(folder, ignore_errors=True)
