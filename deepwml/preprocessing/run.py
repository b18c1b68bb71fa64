"""deepwml_plan_and_preprocess as a library call: fingerprint → plan → splits → preprocessing cache.

Every step is resumable: the fingerprint is reused while the raw files are unchanged, cached cases whose
CASE.json carries the current preprocessing hash are skipped, and a lock keeps two runs off one plan folder.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from deepwml.datasets import Case, RawDataset
from deepwml.datasets.integrity import check_listing
from deepwml.planning.fingerprint import fingerprint_hash, format_table, load_or_compute_fingerprint, training_cases
from deepwml.planning.plan import Plan, load_preset
from deepwml.planning.planner import plan_experiment
from deepwml.planning.splits import load_splits, make_splits, unassigned_cases
from deepwml.preprocessing.cache import is_done, read_cache_summary, remove_stale_temporaries, write_case
from deepwml.preprocessing.parallel import parallel_map
from deepwml.preprocessing.reading import read_case, read_channels
from deepwml.preprocessing.transforms import preprocess_arrays
from deepwml.utils.atomic import write_bytes, write_json
from deepwml.utils.errors import DatasetError, DeepWMLError, PlanError
from deepwml.utils.locks import LockHeld, held


@dataclass
class Options:
    """What the command line asks for."""

    dataset: str
    raw_root: Path
    preprocessed_root: Path
    n_jobs: int = 1
    preset: str = "paper"
    plan_file: Optional[Path] = None
    verify: bool = False
    overwrite: bool = False
    seed: int = 0
    test_fraction: float = 0.2
    n_folds: int = 5
    progress: Optional[bool] = None


@dataclass(frozen=True)
class CaseJob:
    """One case for a preprocessing worker (small and picklable)."""

    case_id: str
    image: Path
    label: Optional[Path]
    meta: Dict[str, Any]
    ignore_value: Optional[int]
    #: every channel's file, channel 0 first (empty: one channel, ``image``)
    channels: Tuple[Path, ...] = ()
    num_classes: int = 2


def plan_and_preprocess(opts: Options, log=print) -> Dict[str, Any]:
    """Run every step for one dataset and return where things went and what was done."""
    raw = RawDataset.find(opts.raw_root, opts.dataset)
    # always, not only with --verify: a broken entry must not vanish and a test case must never be trained on
    check_listing(raw.folder)
    if opts.verify:
        run_verify(raw.folder, opts.n_jobs, opts.progress, log)
    out = opts.preprocessed_root / raw.name
    cases = training_cases(raw)
    unlisted = [c.case_id for c in cases if c.case_id not in raw.meta.cases]
    if unlisted:
        log(f"note: {len(unlisted)} training case(s) have no entry in {raw.json_path} 'cases' and are stratified as centre "
            f"'unknown', disease 'other': {', '.join(unlisted[:5])}{' ...' if len(unlisted) > 5 else ''}")

    started = time.perf_counter()
    # nothing is written before the fingerprint has read every training case: a bad case leaves no half-made folder
    fingerprint, reused = load_or_compute_fingerprint(raw, out / "fingerprint.json", opts.n_jobs, opts.overwrite, opts.progress)
    write_bytes(out / "dataset.json", raw.json_path.read_bytes())
    log(f"fingerprint {'reused' if reused else 'computed'}: {out / 'fingerprint.json'} ({time.perf_counter() - started:.1f} s)")
    log(format_table(fingerprint))

    plan = resolve_plan(opts, fingerprint, out, log, raw.meta.num_classes)
    plan_dir = out / plan.name
    with plan_lock(plan_dir):
        plan.save(plan_dir / "plans.json")
        log(f"plan: {plan_dir / 'plans.json'} (patch {plan.training.patch_size}, batch {plan.training.batch_size}, features {plan.network.features})")
        splits = ensure_splits(out / "splits.json", cases, opts, log)
        done = preprocess_dataset(raw, cases, plan, plan_dir / "cache", opts, log)
    return {"folder": out, "plan_dir": plan_dir, "plan": plan, "splits": splits, "fingerprint": fingerprint, **done}


def run_verify(folder: Path, n_jobs: int, progress: Optional[bool] = None, log=print) -> None:
    """Check the raw dataset with deepwml.datasets.verify; any problem stops the run."""
    # imported lazily: verification is optional and pulls in its own checks
    from deepwml.datasets.verify import verify_dataset

    problems = verify_dataset(folder, n_jobs, progress=bool(progress))
    for problem in problems:
        log(f"  {problem}")
    if problems:
        raise DatasetError(f"verification found {len(problems)} problem(s); fix them, then run again", folder)
    log(f"verified: {folder}")


def resolve_plan(opts: Options, fingerprint: Dict[str, Any], out: Path, log=print, num_classes: int = 2) -> Plan:
    """The user's plan file, or the preset filled in from the fingerprint (refusing to clobber an edited plans.json)."""
    current = fingerprint_hash(fingerprint)
    if opts.plan_file is not None:
        plan = Plan.load(opts.plan_file)
        if plan.fingerprint_hash not in (None, current):
            log(f"note: {opts.plan_file} was planned for another fingerprint; its values are used as they are")
        plan.fingerprint_hash = current
        plan.dataset = fingerprint["dataset"]
        names = fingerprint.get("channel_names") or {"0": "FLAIR"}
        if plan.n_channels != len(names):
            raise PlanError(f"takes {plan.n_channels} image channel(s) (preprocessing.channels) but the dataset has "
                            f"{len(names)}: {names}", opts.plan_file)
        if plan.network.num_classes != num_classes:
            log(f"note: {opts.plan_file} has network.num_classes {plan.network.num_classes}; this dataset has {num_classes} classes")
            plan.network.num_classes = num_classes
            problems = plan.problems()
            if problems:
                raise PlanError("invalid plan for this dataset: " + "; ".join(problems), opts.plan_file)
        return plan
    plan = plan_experiment(load_preset(opts.preset), fingerprint, num_classes)
    existing = out / plan.name / "plans.json"
    if existing.is_file() and not opts.overwrite:
        old = Plan.load(existing)
        if _settings(old) == _settings(plan):
            # only the informational data_summary differs (a newer planner counts differently): keep the file,
            # whose hash the checkpoints trained with it record
            return old
        if old.to_dict() != plan.to_dict():
            if old.fingerprint_hash == plan.fingerprint_hash:
                raise PlanError(
                    f"differs from what preset {opts.preset!r} gives (edited by hand?); use it with "
                    f"--plan-file {existing}, or replace it with --overwrite",
                    existing,
                )
            log(f"the raw data changed since {existing} was planned; planning again")
    return plan


def _settings(plan: Plan) -> Dict[str, Any]:
    """The plan without its informational data_summary."""
    d = plan.to_dict()
    d.pop("data_summary")
    return d


@contextlib.contextmanager
def plan_lock(plan_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a plan folder; the OS drops it when the process dies, even by SIGKILL."""
    plan_dir.mkdir(parents=True, exist_ok=True)
    try:
        with held(plan_dir / ".lock", wait=False):
            yield
    except LockHeld:  # raised by held() alone: the body takes no other lock
        raise DeepWMLError("another deepwml_plan_and_preprocess is working on this plan; wait for it to finish", plan_dir) from None


def ensure_splits(path: Path, cases: List[Case], opts: Options, log=print) -> Dict[str, Any]:
    """Keep (and validate) an existing splits.json; otherwise make a stratified one."""
    ids = [c.case_id for c in cases]
    if path.is_file():
        splits = load_splits(path, ids)
        missing = unassigned_cases(splits, ids)
        log(f"splits: kept {path} (seed {splits.get('seed')}; delete it to split again)")
        if missing:
            log(f"note: {len(missing)} training case(s) are in no test or validation set: {', '.join(missing[:5])}")
        return splits
    strata = {c.case_id: (str(c.meta.centre), str(c.meta.disease)) for c in cases}
    splits = make_splits(ids, strata, opts.test_fraction, opts.n_folds, opts.seed)
    write_json(path, splits)
    if len(splits["folds"]) < opts.n_folds:
        log(f"note: only {len(cases) - len(splits['test'])} cases outside the test set: {len(splits['folds'])} folds instead of {opts.n_folds}")
    sizes = ", ".join(f"{len(f['train'])}/{len(f['val'])}" for f in splits["folds"])
    log(f"splits: {path} (test {len(splits['test'])}; folds train/val {sizes})")
    return splits


def _preprocess_job(job: CaseJob, plan: Plan, cache_dir: Path) -> Tuple[str, float]:
    """Worker: read, preprocess and cache one case; returns (case id, seconds)."""
    started = time.perf_counter()
    image, label = read_case(job.image, job.label, job.ignore_value, job.num_classes)
    images = read_channels(image, job.channels) if job.channels else image
    result = preprocess_arrays(images, plan, None if label is None else label.array, job.ignore_value)
    write_case(cache_dir, job.case_id, result, job.meta)
    return job.case_id, time.perf_counter() - started


class _Worker:
    """Picklable callable binding the plan and cache folder for parallel_map."""

    def __init__(self, plan: Plan, cache_dir: Path) -> None:
        self.plan, self.cache_dir = plan, cache_dir

    def __call__(self, job: CaseJob) -> Tuple[str, float]:
        return _preprocess_job(job, self.plan, self.cache_dir)


def preprocess_dataset(raw: RawDataset, cases: List[Case], plan: Plan, cache_dir: Path, opts: Options, log=print) -> Dict[str, Any]:
    """Preprocess every case not yet cached for this plan; returns counts and timing."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temporaries(cache_dir)
    if removed:
        log(f"removed {removed} temporary file(s) left by an interrupted run")
    h = plan.preprocessing_hash()
    todo = [c for c in cases if opts.overwrite or not is_done(cache_dir, c.case_id, h)]
    jobs = [CaseJob(c.case_id, c.image, c.label, c.meta.to_dict(), raw.meta.ignore_label, c.channels, raw.meta.num_classes)
            for c in todo]
    started = time.perf_counter()
    for _ in parallel_map(_Worker(plan, cache_dir), jobs, opts.n_jobs, desc="preprocess", progress=opts.progress):
        pass
    seconds = time.perf_counter() - started
    summary = read_cache_summary(cache_dir)
    log(
        f"cache: {cache_dir} — {len(jobs)} preprocessed, {len(cases) - len(jobs)} already done "
        f"({seconds:.1f} s, {summary['bytes'] / 1024**2:.1f} MiB on disk)"
    )
    return {"preprocessed": len(jobs), "skipped": len(cases) - len(jobs), "seconds": seconds}
