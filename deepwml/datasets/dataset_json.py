"""The raw dataset's dataset.json: schema, loading with clear errors, writing."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from deepwml.constants import DISEASES, IMAGE_ENDINGS
from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.errors import DatasetError

#: Case ids become file names: letters, digits, '_', '-', '.', not starting with '.', never '..'.
SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

CASE_FIELDS = ("centre", "disease", "vendor", "scanner", "field_strength")


def case_id_problem(case_id: str) -> Optional[str]:
    """Why ``case_id`` is unsafe as a file name, or None when it is fine."""
    if not isinstance(case_id, str) or not case_id:
        return "empty case id"
    if "/" in case_id or "\\" in case_id:
        return f"case id {case_id!r} contains a path separator"
    if ".." in case_id:
        return f"case id {case_id!r} contains '..'"
    if not SAFE_CASE_ID.match(case_id):
        return f"case id {case_id!r} has characters other than letters, digits, '_', '-', '.'"
    return None


@dataclass
class CaseMeta:
    """Per-case metadata used for stratification and reporting."""

    centre: str = "unknown"
    disease: str = "other"
    vendor: str = "unknown"
    scanner: str = "unknown"
    field_strength: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form (extra keys kept)."""
        d = {k: getattr(self, k) for k in CASE_FIELDS}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "CaseMeta":
        """Build from a dataset.json case entry; unknown keys go to ``extra``."""
        known = {k: d[k] for k in CASE_FIELDS if k in d}
        extra = {k: v for k, v in d.items() if k not in CASE_FIELDS}
        return cls(**known, extra=extra)


@dataclass
class DatasetJson:
    """Contents of dataset.json."""

    name: str
    file_ending: str = ".nii.gz"
    description: str = ""
    channel_names: Dict[str, str] = field(default_factory=lambda: {"0": "FLAIR"})
    labels: Dict[str, int] = field(default_factory=lambda: {"background": 0, "lesion": 1})
    cases: Dict[str, CaseMeta] = field(default_factory=dict)
    num_training: int = 0
    num_test: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        """Image channels per case (``channel_names`` "0" .. "C-1")."""
        return len(self.channel_names)

    def channel_list(self) -> List[str]:
        """Channel names in channel order."""
        return [self.channel_names[str(i)] for i in range(self.n_channels)]

    @property
    def ignore_label(self) -> Optional[int]:
        """The declared ignore value, or None."""
        return self.labels.get("ignore")

    @property
    def num_classes(self) -> int:
        """Classes including background (2: a binary lesion dataset; more: a multi-class one such as anatomy)."""
        return len([name for name in self.labels if name != "ignore"])

    @property
    def allowed_label_values(self) -> List[int]:
        """All label values a label file may contain."""
        return sorted(set(int(v) for v in self.labels.values()))

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form."""
        d = {
            "name": self.name,
            "description": self.description,
            "file_ending": self.file_ending,
            "channel_names": self.channel_names,
            "labels": self.labels,
            "numTraining": self.num_training,
            "numTest": self.num_test,
            "cases": {cid: meta.to_dict() for cid, meta in self.cases.items()},
        }
        d.update(self.extra)
        return d

    def save(self, path: Union[str, Path]) -> None:
        """Write atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: Dict[str, Any], path: Optional[Path] = None) -> "DatasetJson":
        """Parse and check the structure; raises DatasetError naming the file."""
        if not isinstance(d, dict):
            raise DatasetError("dataset.json must hold a JSON object", path)
        problems = schema_problems(d)
        if problems:
            raise DatasetError("; ".join(problems), path)
        known = {"name", "description", "file_ending", "channel_names", "labels", "numTraining", "numTest", "cases"}
        return cls(
            name=d["name"],
            description=d.get("description", ""),
            file_ending=d["file_ending"],
            channel_names={str(k): v for k, v in d["channel_names"].items()},
            labels={k: int(v) for k, v in d["labels"].items()},
            cases={cid: CaseMeta.from_dict(m) for cid, m in d.get("cases", {}).items()},
            num_training=int(d.get("numTraining", 0)),
            num_test=int(d.get("numTest", 0)),
            extra={k: v for k, v in d.items() if k not in known},
        )

    @classmethod
    def load(cls, path: Union[str, Path]) -> "DatasetJson":
        """Read dataset.json from a file."""
        path = Path(path)
        return cls.from_dict(read_json(path), path)


def channel_name_problems(channels: Any) -> List[str]:
    """channel_names must number its channels "0".."C-1" with distinct names, channel 0 the FLAIR."""
    example = "{'0': 'FLAIR'} or, with more channels, {'0': 'FLAIR', '1': 'T1'}"
    if not isinstance(channels, dict) or not channels:
        return [f"channel_names must be an object such as {example}, got {channels!r}"]
    if sorted(channels, key=str) != sorted(str(i) for i in range(len(channels))):
        return [f"channel_names keys must be \"0\" .. \"{len(channels) - 1}\", got {sorted(channels)}"]
    names = list(channels.values())
    if not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) != len(names):
        return [f"channel_names must give every channel a distinct non-empty name, got {channels!r}"]
    if "FLAIR" not in channels["0"].upper():
        return [f"channel_names '0' must be the FLAIR (its head mask and grid are used for every channel), got {channels!r}"]
    return []


def _label_problems(labels: Dict[str, Any]) -> List[str]:
    """A binary dataset maps background to 0 and lesion to 1; a multi-class one (more than one foreground class,
    e.g. anatomy) maps its classes to 0, 1, 2, ... with background 0; either may declare an ignore value."""
    classes = {name: value for name, value in labels.items() if name != "ignore"}
    if len(classes) <= 2 or "lesion" in labels:
        problems = []
        if labels.get("background") != 0 or labels.get("lesion") != 1:
            problems.append(f"labels must map background to 0 and lesion to 1, got {labels!r}")
        extra = set(labels) - {"background", "lesion", "ignore"}
        if extra:
            problems.append(f"unknown label names {sorted(extra)}; allowed: background, lesion, ignore "
                            "(a multi-class dataset names two or more classes besides background and no 'lesion')")
    else:
        values = sorted(v for v in classes.values() if isinstance(v, int) and not isinstance(v, bool))
        problems = [] if labels.get("background") == 0 and values == list(range(len(classes))) else [
            f"a multi-class dataset's labels must map background to 0 and its other classes to 1, 2, ... "
            f"(each value once), got {labels!r}"]
        if len(classes) > 255:
            problems.append(f"at most 255 classes, got {len(classes)}")
    if "ignore" in labels:
        value = labels["ignore"]
        if not isinstance(value, int) or value in classes.values():
            problems.append(f"ignore label must be an integer other than the class values, got {value!r}")
    return problems


def schema_problems(d: Dict[str, Any]) -> List[str]:
    """Every structural problem of a dataset.json object (empty: fine)."""
    problems = []
    for key in ("name", "file_ending", "channel_names", "labels"):
        if key not in d:
            problems.append(f"missing key {key!r}")
    if problems:
        return problems
    if d["file_ending"] not in IMAGE_ENDINGS:
        problems.append(f"file_ending {d['file_ending']!r} is not one of {', '.join(IMAGE_ENDINGS)}")
    problems += channel_name_problems(d["channel_names"])
    labels = d["labels"]
    if not isinstance(labels, dict):
        problems.append("labels must be an object such as {'background': 0, 'lesion': 1}")
    else:
        problems.extend(_label_problems(labels))
    cases = d.get("cases", {})
    if not isinstance(cases, dict):
        problems.append("cases must be an object mapping case id to metadata")
        return problems
    for cid, meta in cases.items():
        why = case_id_problem(cid)
        if why:
            problems.append(why)
        if not isinstance(meta, dict):
            problems.append(f"case {cid!r}: metadata must be an object")
            continue
        disease = meta.get("disease", "other")
        if disease not in DISEASES:
            problems.append(f"case {cid!r}: disease {disease!r} is not one of {', '.join(DISEASES)}")
    return problems
