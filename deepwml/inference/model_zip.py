"""Read a model zip without trusting it: every member is checked against the manifest's file list (name, size,
sha256) before it is extracted, streamed and size-capped; nothing the manifest does not list is ever written.

Format 2 (written by deepwml_export_model now) lists every file with its sha256 and size. Format 1 (DeepWML 0.x)
has no checksums: its files are implied by its folds and checkpoint, and only those are extracted.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import stat
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from deepwml.datasets.raw_dataset import DATASET_DIR
from deepwml.inference.model_loading import CHECKPOINT_FILES, FOLD_DIR, fold_name
from deepwml.utils.errors import DeepWMLError

MANIFEST = "manifest.json"
MODEL_FILES = ("plans.json", "dataset.json", "fingerprint.json")
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
MAX_MANIFEST_BYTES = 1 << 20
#: no model file comes near this (the paper network's checkpoint is tens of MB); it caps format-1 members
MAX_FILE_BYTES = 2 << 30
CHUNK = 1 << 20
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class ModelZip:
    """A checked model zip: its manifest, the DatasetNNN_Name/PLAN prefix and the members to extract."""

    manifest: Dict[str, Any]
    manifest_bytes: bytes
    prefix: PurePosixPath
    #: file below the prefix -> (its zip member, its manifest record or None for format 1)
    members: Dict[str, Tuple[zipfile.ZipInfo, Optional[Dict[str, Any]]]]


def model_file_names(folds: Sequence[Union[int, str]], checkpoint: str) -> List[str]:
    """The files of a model below DatasetNNN_Name/PLAN/, manifest aside."""
    return [*MODEL_FILES, *(f"{fold_name(f)}/{CHECKPOINT_FILES[checkpoint]}" for f in folds)]


def file_record(data: bytes) -> Dict[str, Any]:
    """A manifest entry: sha256 and size of a file's bytes."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def open_model_zip(zip_path: Path) -> zipfile.ZipFile:
    """The zip, opened for reading; a missing, damaged or non-zip file is a one-line error."""
    if not zip_path.is_file():
        raise DeepWMLError("model zip not found", zip_path)
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        raise DeepWMLError(f"not a zip file, or a truncated or damaged one ({e})", zip_path) from None


def _member_problem(info: zipfile.ZipInfo) -> Optional[str]:
    """Why a zip member is unsafe to extract (zip-slip, links, encryption), or None."""
    name = info.filename
    if not name:
        return "has an empty name"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if "\\" in name:
        return "contains a backslash"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "contains '..'"
    if any(p in ("", ".") for p in parts):
        return "has an empty or '.' path component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return None


def read_model_zip(zf: zipfile.ZipFile, zip_path: Path) -> ModelZip:
    """Check every member name, find and parse the manifest, and match the members to what it lists."""
    infos = zf.infolist()
    for info in infos:
        why = _member_problem(info)
        if why:
            raise DeepWMLError(f"refusing to install: member {info.filename!r} {why}", zip_path)
    repeated = [n for n, k in Counter(i.filename.rstrip("/") for i in infos).items() if k > 1]
    if repeated:
        raise DeepWMLError(f"refusing to install: member {repeated[0]!r} appears more than once", zip_path)
    manifests = [i for i in infos if not i.is_dir() and PurePosixPath(i.filename).name == MANIFEST]
    if len(manifests) != 1:
        raise DeepWMLError("not a DeepWML model: expected exactly one manifest.json (made by deepwml_export_model)", zip_path)
    info = manifests[0]
    prefix = PurePosixPath(info.filename).parent
    if len(prefix.parts) != 2 or not DATASET_DIR.match(prefix.parts[0]):
        raise DeepWMLError(f"manifest sits at {info.filename!r}; expected DatasetNNN_Name/PLAN/manifest.json", zip_path)
    data = extract_member(zf, info, None, MAX_MANIFEST_BYTES, zip_path)
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise DeepWMLError(f"member {info.filename!r} is not valid JSON ({e})", zip_path) from None
    if not isinstance(manifest, dict):
        raise DeepWMLError(f"member {info.filename!r} is not a JSON object", zip_path)
    expected = _expected_files(manifest, info.filename, zip_path)
    members = _match_members(infos, info, prefix, expected, zip_path)
    return ModelZip(manifest, data, prefix, members)


def _expected_files(manifest: Dict[str, Any], where: str, zip_path: Path) -> Dict[str, Optional[Dict[str, Any]]]:
    """File below the prefix -> manifest record (format 2) or None (format 1), after checking the manifest."""
    version = manifest.get("format_version")
    if version not in READABLE_FORMATS:
        raise DeepWMLError(f"{where} has format_version {version!r}; this DeepWML reads {READABLE_FORMATS}: upgrade DeepWML", zip_path)
    folds, checkpoint = manifest.get("folds"), manifest.get("checkpoint", "best")
    if checkpoint not in CHECKPOINT_FILES:
        raise DeepWMLError(f"{where} names an unknown checkpoint {checkpoint!r}", zip_path)
    if not isinstance(folds, list) or not folds or not all(isinstance(f, (str, int)) and FOLD_DIR.match(fold_name(f)) for f in folds):
        raise DeepWMLError(f"{where} lists no valid folds (expected e.g. [\"0\", \"1\"]), got {folds!r}", zip_path)
    names = model_file_names(folds, checkpoint)
    if version == 1:
        return {name: None for name in names}
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise DeepWMLError(f"{where} (format 2) has no 'files' listing", zip_path)
    for name in files:
        if name not in names:
            raise DeepWMLError(f"{where} lists {name!r}, which is no part of a model of folds {folds} ({checkpoint} checkpoints)", zip_path)
    for name in names:
        record = files.get(name)
        if record is None:
            raise DeepWMLError(f"{where} does not list {name!r}", zip_path)
        if not (isinstance(record, dict) and isinstance(record.get("sha256"), str) and SHA256.match(record["sha256"])
                and type(record.get("size")) is int and 0 <= record["size"] <= MAX_FILE_BYTES):
            raise DeepWMLError(f"{where} has no valid sha256 and size for {name!r}", zip_path)
    return {name: files[name] for name in names}


def _match_members(
    infos: List[zipfile.ZipInfo], manifest_info: zipfile.ZipInfo, prefix: PurePosixPath,
    expected: Dict[str, Optional[Dict[str, Any]]], zip_path: Path,
) -> Dict[str, Tuple[zipfile.ZipInfo, Optional[Dict[str, Any]]]]:
    """Every listed file present, sized as listed; every member listed (folder entries above a listed file aside)."""
    folders = {str(p) for name in expected for p in PurePosixPath(prefix, name).parents} - {"."}
    found: Dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if info is manifest_info:
            continue
        name = info.filename.rstrip("/")
        relative = name[len(str(prefix)) + 1:] if name.startswith(f"{prefix}/") else None
        if info.is_dir() and name in folders and info.file_size == 0:
            continue
        if info.is_dir() or relative not in expected:
            raise DeepWMLError(f"refusing to install: member {info.filename!r} is not listed in the manifest", zip_path)
        found[relative] = info
    members = {}
    for relative, record in expected.items():
        if relative not in found:
            raise DeepWMLError(f"the manifest lists {relative!r} but the zip holds no {prefix}/{relative}", zip_path)
        info = found[relative]
        size = record["size"] if record else MAX_FILE_BYTES
        if (record and info.file_size != size) or info.file_size > size:
            raise DeepWMLError(
                f"refusing to install: member {info.filename!r} unpacks to {info.file_size} bytes but the manifest "
                f"{'lists ' + str(size) if record else 'allows at most ' + str(size)}", zip_path,
            )
        members[relative] = (info, record)
    return members


def _chunks(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, zip_path: Path) -> Iterator[bytes]:
    """A member's decompressed bytes in chunks; stops with an error past ``cap`` bytes (a zip bomb) or on damage."""
    size = 0
    try:
        with zf.open(info) as src:
            while True:
                chunk = src.read(min(CHUNK, cap + 1 - size))
                if not chunk:
                    return
                size += len(chunk)
                if size > cap:
                    raise DeepWMLError(f"refusing to install: member {info.filename!r} unpacks to more than {cap} bytes", zip_path)
                yield chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError) as e:
        raise DeepWMLError(f"member {info.filename!r} cannot be read: the zip is truncated or damaged ({e})", zip_path) from None


def extract_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, record: Optional[Dict[str, Any]], cap: int, zip_path: Path,
    dest: Optional[Path] = None,
) -> bytes:
    """A member's bytes (or, with ``dest``, written there and b""), size-capped and checked against its ``record``."""
    digest, size, chunks = hashlib.sha256(), 0, []
    with open(dest, "xb") if dest else contextlib.nullcontext() as out:
        for chunk in _chunks(zf, info, cap, zip_path):
            size += len(chunk)
            digest.update(chunk)
            if out is None:
                chunks.append(chunk)
            else:
                out.write(chunk)
    if record and (size != record["size"] or digest.hexdigest() != record["sha256"]):
        raise DeepWMLError(
            f"refusing to install: member {info.filename!r} does not match the sha256 in the manifest (altered or damaged)", zip_path
        )
    return b"".join(chunks)
