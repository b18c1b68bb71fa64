"""Archives as inputs: a study as a PACS web viewer or a colleague exports it (ZIP; tar, plain or gzip-, bzip2- or
xz-compressed), read as the folder it holds.

The archive is unpacked into a temporary folder named after it (``study.zip`` -> ``TMP/study/``), so its cases are
named as that folder's would be (a series at the archive's top is the case ``study``), and the folder is removed when
the run ends, however it ends. Unpacking refuses what could write outside that folder or fill the disk: members with
absolute or ``..`` paths, links (symbolic, and a tar's hard links), a tar's devices and pipes, encrypted members,
damaged data (a ZIP's CRC, a compressed stream's), and an archive whose files need more space than the temporary
folder's disk has. macOS's ``__MACOSX`` resource forks are left out. Members are copied out one by one as bytes:
nothing of the archive's own metadata (owners, permissions, links) reaches the disk.
"""
from __future__ import annotations

import contextlib
import lzma
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator, List, Optional, Tuple

from tqdm import tqdm

from deepwml.utils.errors import DeepWMLError, ImageError

#: the file endings read as archives (any letter case; none ends another)
ARCHIVE_ENDINGS = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
#: what a macOS Finder zip adds beside the files: resource forks, never scans
MACOS_EXTRAS = "__MACOSX"
#: share of the free space an archive may fill: the outputs need room too
MAX_SHARE_OF_FREE_SPACE = 0.9
#: what reading a damaged tar archive can raise (tarfile, and the gzip, bzip2 and xz streams below it)
_TAR_ERRORS: Tuple[type, ...] = (tarfile.TarError, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError)


def _ending(path: Path) -> Optional[str]:
    """The archive ending of ``path``'s name, or None."""
    name = path.name.lower()
    return next((e for e in ARCHIVE_ENDINGS if name.endswith(e)), None)


def is_archive(path: Path) -> bool:
    """True for a file whose name ends in an archive ending (ARCHIVE_ENDINGS, any case)."""
    return _ending(path) is not None and path.is_file()


def archive_stem(path: Path) -> str:
    """``study.zip`` -> ``study`` (``study.tar.gz`` -> ``study``): the name of the folder the archive is read as."""
    ending = _ending(path)
    return (path.name[: -len(ending)] if ending else path.name) or "archive"


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


@dataclass(frozen=True)
class _Member:
    """A file of an archive: its name as stored, its folders and name, its size, and what is wrong with it ('')."""

    name: str
    parts: Tuple[str, ...]
    size: int
    problem: str
    #: the archive's own record of it, for reading
    info: object


def unpack(path: Path, root: Path, progress: Optional[bool] = None) -> List[Path]:
    """Unpack the archive ``path`` into the new folder ``root``; returns the files written. Refuses (ImageError naming
    the archive) anything that would land outside ``root``, links and special files, encrypted or damaged members, and
    more data than the disk can take."""
    kind = "ZIP" if _ending(path) == ".zip" else "tar"
    with _opened(path, kind) as (members, read, errors):
        members = [m for m in members if m.parts[:1] != (MACOS_EXTRAS,)]
        if not members:
            raise ImageError(f"the {kind} archive holds no files", path)
        for member in members:
            if member.problem:
                raise ImageError(f"member {member.name} of the {kind} archive {member.problem}", path)
        needed = sum(m.size for m in members)
        root.mkdir(parents=True)
        free = shutil.disk_usage(root).free
        if needed > MAX_SHARE_OF_FREE_SPACE * free:
            raise ImageError(f"the {kind} archive's files need {needed / 1e9:.2f} GB, more than the temporary folder's disk "
                             f"has free ({free / 1e9:.2f} GB; set TMPDIR to a larger disk, or unpack it yourself)", path)
        written = []
        show = sys.stderr.isatty() if progress is None else progress
        with tqdm(total=needed, unit="B", unit_scale=True, desc=f"unpacking {path.name}", disable=not show, file=sys.stderr) as bar:
            for member in members:
                target = root.joinpath(*member.parts)
                try:  # a member named like another's folder (a file 'a' and 'a/b') cannot be written either
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with read(member) as source, open(target, "wb") as sink:
                        shutil.copyfileobj(source, sink, 1 << 20)
                except errors as e:
                    raise ImageError(f"member {member.name} of the {kind} archive cannot be unpacked ({e})", path) from None
                written.append(target)
                bar.update(member.size)
    print(f"[deepwml] note: {path}: read as the folder it holds ({len(written)} file{'s' * (len(written) != 1)}, {needed / 1e6:.1f} MB unpacked "
          "into a temporary folder)", file=sys.stderr)
    return written


Opened = Tuple[List[_Member], Callable[[_Member], IO[bytes]], Tuple[type, ...]]


@contextlib.contextmanager
def _opened(path: Path, kind: str) -> Iterator[Opened]:
    """(the files of the ``kind`` ('ZIP' or 'tar') archive, how to read one, what reading a damaged one raises)."""
    if kind == "ZIP":
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise ImageError(f"is not a readable ZIP archive ({e})", path) from None
        with archive:
            members = [_zip_member(m) for m in archive.infolist() if not m.is_dir()]
            yield members, lambda m: archive.open(m.info), (zipfile.BadZipFile, OSError, EOFError, NotImplementedError)
        return
    try:
        archive = tarfile.open(path, "r:*")
    except _TAR_ERRORS as e:
        raise ImageError(f"is not a readable tar archive ({e})", path) from None
    with archive:
        try:  # a compressed tar is read to its end here: one cut short or damaged is found before anything is written
            infos = archive.getmembers()
        except _TAR_ERRORS as e:
            raise ImageError(f"is not a readable tar archive ({e})", path) from None
        yield [_tar_member(m) for m in infos if not m.isdir()], lambda m: archive.extractfile(m.info), _TAR_ERRORS


def _zip_member(member: zipfile.ZipInfo) -> _Member:
    """A ZIP member and what is wrong with it (old Windows tools wrote \\ between folders, against the format's /)."""
    parts = PurePosixPath(member.filename.replace("\\", "/")).parts
    problem = _outside(parts)
    if not problem and stat.S_ISLNK(member.external_attr >> 16):
        problem = "is a symbolic link; refused"
    if not problem and member.flag_bits & 0x1:
        problem = "is encrypted; unpack it with its password first"
    return _Member(member.filename, parts, member.file_size, problem, member)


def _tar_member(member: tarfile.TarInfo) -> _Member:
    """A tar member and what is wrong with it."""
    parts = PurePosixPath(member.name).parts
    problem = (_outside(parts) or ("is a symbolic link; refused" if member.issym() else "")
               or ("is a hard link; refused" if member.islnk() else "")
               or ("" if member.isfile() else "is not a regular file (a device or a pipe); refused"))
    return _Member(member.name, parts, member.size, problem, member)


def _outside(parts: Tuple[str, ...]) -> str:
    """Why a member with these folders and name would be written outside the unpacked folder ('' when it would not)."""
    if (parts and (parts[0] == "/" or ":" in parts[0])) or ".." in parts:
        return "points outside the archive's folder; refused"
    return ""


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
