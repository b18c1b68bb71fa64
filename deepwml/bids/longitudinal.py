"""deepwml_bids --longitudinal: each participant's sessions compared in order, as deepwml_compare compares two visits.

A participant's published scans form chains by their entities other than the session (``acq-tse`` with ``acq-tse``,
a plain FLAIR with a plain FLAIR); each chain's sessions are ordered by ``acq_time`` in the participant's
sessions.tsv when every one of them has it, else by their labels in natural order (ses-2 before ses-10), and each
later session is compared with the one before it, the chain's first or both (MS trials count new lesions against
the previous scan and against baseline), from the published masks (nothing is segmented again), into
``OUTPUT/sub-<label>/longitudinal/ses<a>_to_ses<b>[_<entities>]/`` with a ``visits.json`` naming the two (no hyphen
after 'ses': a folder named ses-<label> below a participant is a session to BIDS tools).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from deepwml.bids import LONGITUDINAL_AGAINST
from deepwml.bids.derivatives import mask_of, published_sidecars, read_sidecar
from deepwml.bids.layout import BidsScan, scan_of
from deepwml.bids.tables import read_tsv
from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.errors import DeepWMLError

FOLDER = "longitudinal"
AGAINST = LONGITUDINAL_AGAINST
VISITS_NAME = "visits.json"


@dataclass(frozen=True)
class Visit:
    """One published scan of a participant, for comparing."""

    scan: BidsScan
    mask: Path
    lesions: Optional[Path]  # deepwml_predict's lesion table of the mask (same numbering), when kept
    acquired: Optional[datetime]
    #: the scan's summary.csv row, from the mask's sidecar (not part of the visit's identity: visits are hashed)
    figures: Dict[str, object] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Comparison:
    """One pair of consecutive sessions: where it is written, and what became of it."""

    baseline: Visit
    followup: Visit
    folder: Path
    ordered_by: str  # 'acq_time' or 'label'
    compared_with: str  # 'previous', 'first' or 'previous and first'
    status: str  # 'compared', 'done' (an earlier run's), 'failed'
    findings: str = ""


def _natural(label: str) -> List[object]:
    """A sort key that puts ses-2 before ses-10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", label)]


def _acquired(bids_root: Path, scan: BidsScan) -> Optional[datetime]:
    """The session's acq_time from the participant's sessions.tsv, when it holds one that reads as a date."""
    table = read_tsv(bids_root / f"sub-{scan.subject}" / f"sub-{scan.subject}_sessions.tsv")
    if table is None or "session_id" not in table or "acq_time" not in table:
        return None
    rows = table.loc[table["session_id"] == f"ses-{scan.session}", "acq_time"].dropna()
    try:
        return datetime.fromisoformat(str(rows.iloc[0])) if len(rows) else None
    except ValueError:
        return None


def participant_visits(out: Path, bids_root: Path, subject: str, lesion_tables: Dict[str, Path]) -> List[Visit]:
    """Every published scan of ``subject`` that has a session (``lesion_tables``: scan stem -> its lesion CSV)."""
    visits = []
    for sidecar in published_sidecars(out, subject):
        record = read_sidecar(sidecar)
        scan = scan_of(bids_root, bids_root / record.source)
        if scan is None or scan.session is None or not scan.path.exists():
            continue
        visits.append(Visit(scan, mask_of(sidecar, scan.ending), lesion_tables.get(scan.stem), _acquired(bids_root, scan),
                            dict(record.summary)))
    return visits


def _chain_key(scan: BidsScan) -> str:
    """The scan's entities other than participant and session: scans alike enough to compare."""
    return "_".join(e for e in scan.prefix.split("_") if not e.startswith(("sub-", "ses-")))


def session_pairs(visits: Sequence[Visit], against: str = "previous") -> List[Tuple[Visit, Visit, str, str]]:
    """Each later visit of a chain with the one before it (``against`` 'previous'), with the chain's first ('first'),
    or both ('both'; a second session's one comparison serves both); with what ordered them and what it compares with."""
    if against not in AGAINST:
        raise DeepWMLError(f"compare sessions against one of {', '.join(AGAINST)}, not {against!r}")
    chains: Dict[str, List[Visit]] = {}
    for v in visits:
        chains.setdefault(_chain_key(v.scan), []).append(v)
    pairs = []
    for chain in chains.values():
        if all(v.acquired is not None for v in chain) and len({v.acquired for v in chain}) == len(chain):
            ordered, basis = sorted(chain, key=lambda v: v.acquired), "acq_time"
        else:
            ordered, basis = sorted(chain, key=lambda v: _natural(v.scan.session or "")), "label"
        for k in range(1, len(ordered)):
            bases = ([ordered[k - 1]] if against != "first" else []) + ([ordered[0]] if against != "previous" else [])
            for base in dict.fromkeys(bases):  # the second session's previous is the first: one comparison
                kinds = [kind for kind, b in (("previous", ordered[k - 1]), ("first", ordered[0]))
                         if b is base and against in (kind, "both")]
                pairs.append((base, ordered[k], basis, " and ".join(kinds)))
    return pairs


def pair_folder(out: Path, baseline: Visit, followup: Visit) -> Path:
    """Where the comparison of two visits is written."""
    key = _chain_key(followup.scan)
    name = f"ses{baseline.scan.session}_to_ses{followup.scan.session}" + (f"_{key}" if key else "")
    return out / f"sub-{followup.scan.subject}" / FOLDER / name


def _current(folder: Path, baseline: Visit, followup: Visit) -> bool:
    """True when the folder holds a comparison of these two visits made after both masks were last written."""
    change, visits = folder / "change.json", folder / VISITS_NAME
    if not (change.is_file() and visits.is_file()):
        return False
    try:
        record = read_json(visits)
    except DeepWMLError:
        return False
    same = record.get("baseline_source") == baseline.scan.relative and record.get("followup_source") == followup.scan.relative
    return same and change.stat().st_mtime_ns >= max(baseline.mask.stat().st_mtime_ns, followup.mask.stat().st_mtime_ns)


def compare_sessions(out: Path, bids_root: Path, subjects: Sequence[str], lesion_tables: Dict[str, Path], masks_from: str,
                     device: str = "auto", overwrite: bool = False, against: str = "previous") -> List[Comparison]:
    """Compare each of ``subjects``' later sessions with the one before it (or the first, or both: ``against``); a
    comparison that fails is reported, not raised."""
    from deepwml.longitudinal.run import CompareRequest, compare

    results = []
    for subject in subjects:
        for baseline, followup, basis, kind in session_pairs(participant_visits(out, bids_root, subject, lesion_tables), against):
            folder = pair_folder(out, baseline, followup)
            if not overwrite and _current(folder, baseline, followup):
                findings = str(read_json(folder / "change.json").get("findings", ""))
                record = read_json(folder / VISITS_NAME)
                if record.get("compared_with") != kind:  # the same comparison, now asked for as well as 'first'
                    write_json(folder / VISITS_NAME, {**record, "compared_with": kind})
                results.append(Comparison(baseline, followup, folder, basis, kind, "done", findings))
                continue
            try:
                report = compare(CompareRequest(
                    baseline=baseline.scan.path, followup=followup.scan.path, output=folder, baseline_mask=baseline.mask,
                    followup_mask=followup.mask, followup_lesions=followup.lesions, masks_from=masks_from, device=device,
                    overwrite=True, mask_figures={"baseline": baseline.figures, "followup": followup.figures}))
            except DeepWMLError as e:
                results.append(Comparison(baseline, followup, folder, basis, kind, "failed", str(e)))
                continue
            interval = (followup.acquired - baseline.acquired).days if basis == "acq_time" else None
            write_json(folder / VISITS_NAME, {
                "participant_id": f"sub-{subject}", "baseline_session": f"ses-{baseline.scan.session}",
                "followup_session": f"ses-{followup.scan.session}", "baseline_source": baseline.scan.relative,
                "followup_source": followup.scan.relative, "ordered_by": basis, "compared_with": kind, "interval_days": interval,
            })
            results.append(Comparison(baseline, followup, folder, basis, kind, "compared", str(report.summary["findings"])))
    return results
