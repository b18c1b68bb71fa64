"""ZIP archives as inputs: a study as a PACS web viewer or a colleague exports it, read as the folder it holds.

The archive is unpacked into a temporary folder named after it (``study.zip`` -> ``TMP/study/``), so its cases are
named as that folder's would be (a series at the archive's top is the case ``study``), and the folder is removed when
the run ends, however it ends. Unpacking refuses what could write outside that folder or fill the disk: members with
absolute or ``..`` paths, symbolic links, encrypted members, damaged data (CRC), and an archive whose files need more
space than the temporary folder's disk has. macOS's ``__MACOSX`` resource forks are left out.
"""
from __future__ import annotations

import contextlib
import shutil
import stat
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator, List, Optional, Tuple

from tqdm import tqdm

from deepwml.utils.errors import DeepWMLError, ImageError

ARCHIVE_ENDING = ".zip"
#: what a macOS Finder zip adds beside the files: resource forks, never scans
MACOS_EXTRAS = "__MACOSX"
#: share of the free space an archive may fill: the outputs need room too
MAX_SHARE_OF_FREE_SPACE = 0.9


def is_archive(path: Path) -> bool:
    """True for a file whose name ends in .zip (any case)."""
    return path.name.lower().endswith(ARCHIVE_ENDING) and path.is_file()


def archive_stem(path: Path) -> str:
    """``study.zip`` -> ``study``: the name of the folder the archive is read as."""
    return path.name[: -len(ARCHIVE_ENDING)] or "archive"


@contextlib.contextmanager
def unpacked(path: Path, progress: Optional[bool] = None) -> Iterator[Path]:
    """``path`` itself when it is no archive; an archive unpacked into ``TMP/<stem>/`` for the block, removed after.
    ``progress``: a bar of the bytes unpacked (None: when stderr is a terminal)."""
    if not is_archive(path):
        yield path
        return
    scratch = Path(tempfile.mkdtemp(prefix="deepwml-archive-"))
    try:
        root = scratch / archive_stem(path)
        unpack(path, root, progress)
        yield root
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def unpack(path: Path, root: Path, progress: Optional[bool] = None) -> List[Path]:
    """Unpack the ZIP archive ``path`` into the new folder ``root``; returns the files written. Refuses (ImageError
    naming the archive) anything that would land outside ``root``, links, encrypted or damaged members, and more data
    than the disk can take."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ImageError(f"is not a readable ZIP archive ({e})", path) from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and _parts(m)[:1] != (MACOS_EXTRAS,)]
        if not members:
            raise ImageError("the ZIP archive holds no files", path)
        for member in members:
            _check_member(member, path)
        needed = sum(m.file_size for m in members)
        root.mkdir(parents=True)
        free = shutil.disk_usage(root).free
        if needed > MAX_SHARE_OF_FREE_SPACE * free:
            raise ImageError(f"the ZIP archive's files need {needed / 1e9:.2f} GB, more than the temporary folder's disk "
                             f"has free ({free / 1e9:.2f} GB; set TMPDIR to a larger disk, or unpack it yourself)", path)
        written = []
        show = sys.stderr.isatty() if progress is None else progress
        with tqdm(total=needed, unit="B", unit_scale=True, desc=f"unpacking {path.name}", disable=not show, file=sys.stderr) as bar:
            for member in members:
                target = root.joinpath(*_parts(member))
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(member) as source, open(target, "wb") as sink:
                        shutil.copyfileobj(source, sink, 1 << 20)
                except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as e:
                    raise ImageError(f"member {member.filename} of the ZIP archive cannot be unpacked ({e})", path) from None
                written.append(target)
                bar.update(member.file_size)
    print(f"[deepwml] note: {path}: read as the folder it holds ({len(written)} file{'s' * (len(written) != 1)}, {needed / 1e6:.1f} MB unpacked "
          "into a temporary folder)", file=sys.stderr)
    return written


def in_archive_terms(text: str, folder: Path, archive: Path) -> str:
    """``text`` as the user should read it: the archive's name where the temporary folder it was unpacked into stood."""
    return text.replace(str(folder), str(archive))


def named_by_archive(error: DeepWMLError, folder: Path, archive: Path) -> DeepWMLError:
    """``error`` in the archive's terms (:func:`in_archive_terms`)."""
    if error.path is None or str(folder) not in error.path:
        return error
    return type(error)(in_archive_terms(error.problem, folder, archive), in_archive_terms(error.path, folder, archive))


def member_name(path: Path, folder: Path, archive: Path) -> str:
    """How a file or folder unpacked into ``folder`` is named to the user: ``study.zip: DICOM/SE1`` (the archive alone
    for the folder itself)."""
    inside = path.relative_to(folder).as_posix()
    return str(archive) + ("" if inside == "." else f": {inside}")


def _parts(member: zipfile.ZipInfo) -> Tuple[str, ...]:
    """The folders and name of a member (old Windows tools wrote \\ between folders, against the format's /)."""
    return PurePosixPath(member.filename.replace("\\", "/")).parts


def _check_member(member: zipfile.ZipInfo, path: Path) -> None:
    """Refuse a member that could write outside the unpacked folder, a link, or one that cannot be read."""
    parts = _parts(member)
    if (parts and (parts[0] == "/" or ":" in parts[0])) or ".." in parts:
        raise ImageError(f"member {member.filename} of the ZIP archive points outside the archive's folder; refused", path)
    if stat.S_ISLNK(member.external_attr >> 16):
        raise ImageError(f"member {member.filename} of the ZIP archive is a symbolic link; refused", path)
    if member.flag_bits & 0x1:
        raise ImageError(f"member {member.filename} of the ZIP archive is encrypted; unpack it with its password first", path)
