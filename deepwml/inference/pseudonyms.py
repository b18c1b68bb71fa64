"""Pseudonymised outputs (deepwml_predict --pseudonymise KEY): outputs that can leave the hospital for research.

Each case is named by a keyed hash of its own name (``P`` and 12 hex digits of HMAC-SHA256): the same key gives the
same pseudonym on every run, so follow-up scans of a case named alike stay linked, while without the key nobody can
tell a pseudonym from a guessed Patient ID or folder name (a plain hash could be tried against every ID). The key is a
file of 64 hex digits (32 random bytes), made on first use, readable by its owner only; beside it,
``pseudonyms.csv`` lists pseudonym, original name and source, for the site to re-identify. Both stay where the key
is, never in the output folder. Inside the outputs nothing names the scan: no source path and no DICOM series label
(with its date and UID) in the report or summary.csv, and error messages show ``<input>`` for the path. DICOM
objects carry the patient's identity by design (they go back to the PACS), so they are refused in this mode.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import os
import secrets
from pathlib import Path
from typing import Dict, Iterable, Iterator, Sequence, Tuple

from deepwml.utils.atomic import atomic_path
from deepwml.utils.errors import DeepWMLError
from deepwml.utils.locks import held

#: the list of pseudonyms written beside the key
MAP_NAME = "pseudonyms.csv"
MAP_COLUMNS = ("pseudonym", "case_id", "source")
KEY_HEX_DIGITS = 64


@contextlib.contextmanager
def key_lock(path: Path) -> Iterator[None]:
    """Hold the key's lock (a hidden file beside it): runs side by side (--num-parts, array jobs) must make one key,
    not one each, and add to one pseudonyms.csv."""
    path = Path(path).expanduser()
    with held(path.parent / f".{path.name}.lock"):
        yield


def load_or_create_key(path: Path) -> Tuple[bytes, bool]:
    """The key in ``path`` (64 hex digits), made there when the file does not exist; (key, created)."""
    path = Path(path).expanduser()
    if not path.exists():
        if not path.parent.is_dir():
            raise DeepWMLError("--pseudonymise: the key's folder does not exist", path.parent)
        with atomic_path(path, ".key") as tmp:
            os.chmod(tmp, 0o600)  # the key re-identifies: its owner only, before anything is in it
            tmp.write_text(secrets.token_hex(KEY_HEX_DIGITS // 2) + "\n")
        return bytes.fromhex(path.read_text().strip()), True
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise DeepWMLError(f"--pseudonymise: the key cannot be read ({e.__class__.__name__})", path) from None
    if len(text) != KEY_HEX_DIGITS or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise DeepWMLError(f"--pseudonymise: not a DeepWML pseudonym key ({KEY_HEX_DIGITS} hex digits); give a new "
                           "file name to make one", path)
    return bytes.fromhex(text), False


def pseudonym(key: bytes, name: str) -> str:
    """The pseudonym of a case name under ``key``: P and 12 hex digits of HMAC-SHA256."""
    return "P" + hmac.new(key, name.encode("utf-8"), hashlib.sha256).hexdigest()[:12].upper()


def record_pseudonyms(key_path: Path, rows: Iterable[Tuple[str, str, str]]) -> Path:
    """Merge (pseudonym, case_id, source) rows into pseudonyms.csv beside the key (written whole, then renamed)."""
    path = Path(key_path).expanduser().parent / MAP_NAME
    known: Dict[str, Tuple[str, str, str]] = {}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                known[row["pseudonym"]] = (row["pseudonym"], row["case_id"], row["source"])
    for row in rows:
        known[row[0]] = row
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MAP_COLUMNS)
    writer.writerows(sorted(known.values(), key=lambda r: r[1]))
    with atomic_path(path) as tmp:
        os.chmod(tmp, 0o600)  # names beside pseudonyms: its owner only, like the key
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def check_key_outside(key_path: Path, out_dir: Path, inputs: Sequence[Path]) -> None:
    """The key (and its list) must not lie in the output folder, which is what gets shared, nor among the inputs."""
    key = Path(key_path).expanduser().resolve()
    folder = Path(out_dir).expanduser().resolve()
    if folder in key.parents:
        raise DeepWMLError("--pseudonymise: the key lies inside the output folder, which is what gets shared; keep it "
                           "elsewhere", key_path)
    for source in inputs:
        if key == Path(source).resolve():
            raise DeepWMLError("--pseudonymise: the key is one of the inputs", key_path)
