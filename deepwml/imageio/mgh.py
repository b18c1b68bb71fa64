"""FreeSurfer's MGH format (``.mgh``, and ``.mgz``: the same bytes gzipped), which ITK has no reader for, read and
written through nibabel.

FreeSurfer, SynthSeg and SAMSEG write their volumes so, and a FLAIR that went through them (``mri_convert``,
``recon-all -FLAIR``) comes as ``.mgz``. nibabel parses the format (header, voxels with the first axis fastest,
footer); this module turns its RAS vox2ras affine into ITK's LPS geometry and back (the first two world axes
negated), keeps the voxels in the file's own type, and refuses by name what is not one 3D scan with a geometry: a
volume of several frames, or a header without geometry (goodRASflag 0), for which FreeSurfer and nibabel assume 1 mm
voxels in a conformed orientation, which no clinical FLAIR has.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Tuple

import numpy as np

from deepwml.imageio.geometry import Geometry
from deepwml.utils.errors import ImageError

#: the voxel types MGH stores (uint8, int16, int32, float32)
STORED = (np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.int32), np.dtype(np.float32))
#: RAS <-> LPS: the first two world axes negated
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
#: what a damaged file makes nibabel or the gzip reader raise
_BROKEN = (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile)


def is_mgh(path: Path) -> bool:
    """Whether the name ends in .mgh or .mgz."""
    return Path(path).name.lower().endswith((".mgh", ".mgz"))


def _load(path: Path):
    """nibabel's MGHImage of ``path`` (voxels not yet read), checked to be one 3D scan with a geometry."""
    from nibabel.freesurfer.mghformat import MGHError, MGHImage
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    try:
        image = MGHImage.from_filename(str(path))
    except KeyError as e:  # nibabel's lookup of the data type code
        raise ImageError(f"unreadable MGH file (unknown data type code {e.args[0]}; MGH stores 0 uchar, 1 int, 3 float, "
                         "4 short)", path) from None
    except (MGHError, HeaderDataError, ImageFileError, *_BROKEN) as e:
        raise ImageError(f"unreadable MGH file ({_said(e)})", path) from None
    dims = [int(v) for v in image.header["dims"]]
    if dims[3] != 1:
        raise ImageError(f"is 4D: {dims[3]} frames of {dims[0]} x {dims[1]} x {dims[2]}; expected one 3D stack of "
                         "slices (mri_convert --frame N splits one out)", path)
    if _stored_good_ras(path) <= 0:
        raise ImageError("MGH header holds no voxel size or orientation (goodRASflag 0): FreeSurfer would assume 1 mm "
                         "voxels in a conformed orientation; convert the scan from its DICOM or NIfTI original", path)
    return image


def _stored_good_ras(path: Path) -> int:
    """The goodRASflag as the file stores it (big-endian int16 at byte 28): nibabel's header replaces a 0 with its
    default geometry and a 1, so the file's own flag is read here."""
    opener = gzip.open if Path(path).name.lower().endswith(".mgz") else open
    try:
        with opener(path, "rb") as stream:
            return int(np.frombuffer(stream.read(30)[28:30], ">i2")[0])
    except (*_BROKEN, IndexError) as e:
        raise ImageError(f"unreadable MGH file ({_said(e)})", path) from None


def _said(error: Exception) -> str:
    """An exception's message on one line (nibabel's run over several)."""
    return " ".join(str(error).split())


def nibabel_geometry(image) -> Geometry:
    """The ITK (LPS) geometry of nibabel's image: spacing the affine's column lengths, direction its unit columns."""
    affine = _FLIP @ np.asarray(image.affine, float)
    columns = affine[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    return Geometry(tuple(int(s) for s in image.shape[:3]), tuple(spacing), tuple(affine[:3, 3]),
                    tuple((columns / spacing).ravel()))


def read_mgh_geometry(path: Path) -> Geometry:
    """The geometry in an MGH/MGZ file's header (its voxels are not read)."""
    return nibabel_geometry(_load(path))


def read_mgh(path: Path) -> Tuple[np.ndarray, Geometry]:
    """(voxels in numpy z, y, x order and the file's own type, geometry) of an MGH/MGZ file."""
    image = _load(path)
    try:
        voxels = np.asanyarray(image.dataobj)
    except _BROKEN as e:
        raise ImageError(f"unreadable or truncated MGH voxels ({_said(e)})", path) from None
    # nibabel's axes are the file's (x, y, z), x fastest; numpy's order here is (z, y, x)
    array = np.ascontiguousarray(voxels.reshape(image.shape[:3]).transpose(2, 1, 0))
    return array.astype(array.dtype.newbyteorder("="), copy=False), nibabel_geometry(image)


def _stored(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` (not boolean: write_image stores masks as uint8) in a type MGH stores without loss of what it holds
    (uint8, int16, int32 or float32)."""
    if array.dtype in STORED:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    for kind in (np.int16, np.int32):
        if array.size == 0 or (array.min() >= np.iinfo(kind).min and array.max() <= np.iinfo(kind).max):
            return array.astype(kind)
    raise ImageError(f"values {array.min()}..{array.max()} do not fit an MGH file's 32-bit integers", path)


def write_mgh(array: np.ndarray, geometry: Geometry, path: Path, target: Path) -> None:
    """Write ``array`` (numpy z, y, x order) on ``geometry`` as MGH into ``target``, a temporary name with the same
    ending (nibabel gzips .mgz) that the caller renames to ``path``."""
    from nibabel.freesurfer.mghformat import MGHImage

    from deepwml.imageio.headers import itk_ras_affine

    voxels = _stored(np.asarray(array), path).transpose(2, 1, 0)
    MGHImage(voxels, itk_ras_affine(geometry)).to_filename(str(target))
