"""A site's labelled scans in, a fine-tuned model out, in one command (deepwml_finetune).

The manifest's labelled rows (image files or DICOM series, masks as files, DICOM SEG or, with --lesion-id-masks,
corrected lesion-id maps) become a raw dataset, planned and preprocessed with the starting model's own plans.json
(the network must match to start from its weights), trained on every case (fold 'all') from the starting model's weights at its fine-tuning learning rate,
or with --folds K as K fold networks scored out of fold (finetune_crossval), and installed as a model folder for
``deepwml_predict -m`` with a model card naming the scans, the start, the schedule, the time and what was measured.
Every step is a public command; the work folder resumes an interrupted run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from deepwml.datasets.dataset_writer import SourceCase, write_dataset
from deepwml.datasets.lesion_id_label import LesionIdLabel
from deepwml.datasets.manifest import default_file_ending, read_manifest
from deepwml.inference.packaging import install_as_folder
from deepwml.planning.plan import Plan
from deepwml.pretrained.finetune_crossval import card_lines as crossval_card_lines
from deepwml.pretrained.finetune_crossval import check_folds, fold_validation, kept_scores, score_crossval, verdict
from deepwml.pretrained.finetune_holdout import card_lines, choose_holdout, score_holdout
from deepwml.pretrained.recipe import training_hours
from deepwml.training.pretrained_weights import FINETUNE_LR_FACTOR
from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.commands import run_command
from deepwml.utils.errors import DeepWMLError

DATASET_ID, NAME = 590, "SiteFinetune"
DATASET = f"Dataset{DATASET_ID}_{NAME}"
STATE = "finetune.json"


@dataclass
class FinetuneRequest:
    """What deepwml_finetune is asked to do."""

    manifest: Path
    output: Path
    start: str = "builtin"
    work: Optional[Path] = None
    epochs: int = 20
    iterations: Optional[int] = None
    lr: Optional[float] = None
    device: str = "auto"
    n_jobs: int = 2
    seed: int = 0
    overwrite: bool = False
    #: labelled scans kept aside (not trained on) to score the fine-tuned and the start model on (finetune_holdout)
    holdout: int = 0
    #: the masks are lesion-id maps (deepwml_predict --save-lesion-ids, corrected in a viewer): any value above 0 is lesion
    lesion_id_masks: bool = False
    #: a mask value that is neither lesion nor not (the WMH challenge's 2): declared the dataset's ignore value
    ignore_label: Optional[int] = None
    #: K >= 2: K fold networks, cross-validated out of fold and shipped as an ensemble (finetune_crossval); 0: one
    #: network trained on every scan (fold 'all')
    folds: int = 0
    #: with folds: what is installed, 'folds' (the K networks, averaged) or 'all' (one more network fine-tuned on
    #: every scan, with the settings chosen out of fold)
    ship: str = "folds"


def start_model(spec: str) -> Path:
    """The PLAN folder to start from: 'builtin' (the shipped model) or a trained model's PLAN folder."""
    from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir

    folder = builtin_model_dir() if spec == BUILTIN_ALIAS else Path(spec).expanduser()
    if not (folder / "plans.json").is_file():
        raise DeepWMLError("--from: not a model's PLAN folder (no plans.json)", folder)
    return folder


def work_folder(request: FinetuneRequest) -> Path:
    """Where data, caches and training go: --work, else a hidden folder beside the output."""
    out = Path(request.output).expanduser().resolve()
    return Path(request.work).expanduser().resolve() if request.work else out.parent / f".{out.name}.work"


def _log(message: str) -> None:
    print(f"[deepwml_finetune] {message}", flush=True)


def _mask_problems(problems: List, labelled: List[SourceCase]) -> str:
    """The dataset's problems, with the masks named by the manifest's paths and what to do about undeclared values."""
    text = "; ".join(map(str, problems))
    # the copies are named in the problems; the user knows the masks by the manifest's paths
    masks = ", ".join(f"{c.case_id}: {c.label}" for c in labelled
                      if f"labelsTr/{c.case_id}." in text or f"labelsTs/{c.case_id}." in text)
    hints = [f"the masks: {masks}"] if masks else []
    if "not declared in dataset.json labels" in text:
        hints.append("if every value above 0 is lesion (a 0/255 mask, or lesions numbered one by one), give "
                     "--lesion-id-masks; a value that is neither lesion nor not, as the WMH challenge's 2 for other "
                     "pathology, needs --ignore-label V")
    return text + (f" ({'; '.join(hints)})" if hints else "")


def run_finetune(request: FinetuneRequest) -> Path:
    """Run every step (each skipped when already done) and install the model in ``request.output``; returns it."""
    start = start_model(request.start)
    plan = Plan.load(start / "plans.json")
    cases = read_manifest(request.manifest)
    labelled = [c for c in cases if c.split == "Tr"]
    if not labelled:
        raise DeepWMLError("no row has a label: fine-tuning needs labelled scans", request.manifest)
    skipped = len(cases) - len(labelled)
    out = Path(request.output).expanduser()
    if out.exists() and not request.overwrite:
        raise DeepWMLError("exists; give another -o or --overwrite to replace the model there", out)
    work = work_folder(request)
    held = choose_holdout([c.case_id for c in labelled], request.holdout, request.seed)
    if request.folds:
        check_folds(request.folds, len(labelled) - len(held))
    if request.ship not in ("folds", "all") or (request.ship == "all" and not request.folds):
        raise DeepWMLError(f"--ship {request.ship}: 'folds' or 'all', and 'all' only with --folds (without it the one "
                           "network trained on every scan is what is installed)")
    identity = {"manifest": _digest(Path(request.manifest)), "scans": _scans_digest(labelled),
                "start": str(start.resolve()), "epochs": request.epochs,
                "iterations": request.iterations, "lr": request.lr, "seed": request.seed}
    if held:  # (a run from before --holdout kept none aside: its identity has no such key)
        identity["holdout"] = held
    if request.lesion_id_masks:
        identity["lesion_id_masks"] = True
    if request.ignore_label is not None:
        identity["ignore_label"] = request.ignore_label
    if request.folds:
        identity["folds"] = request.folds
    _claim(work, identity)
    if request.lesion_id_masks:
        labelled = [dataclasses.replace(c, label=LesionIdLabel(c.label)) if isinstance(c.label, Path) else c for c in labelled]
    # the scans kept aside go to the test split: converted like the others, never trained on
    labelled = [dataclasses.replace(c, split="Ts") if c.case_id in held else c for c in labelled]
    raw, pre, results = work / "raw", work / "preprocessed", work / "results"
    if not (raw / DATASET / "dataset.json").is_file():
        _log(f"{len(labelled)} labelled scan(s) -> {raw / DATASET}" + (f" ({skipped} row(s) without a label left out)" if skipped else "")
             + (f"; {len(held)} kept aside to score the models on" if held else ""))
        labels = None if request.ignore_label is None else {"background": 0, "lesion": 1, "ignore": request.ignore_label}
        result = write_dataset(labelled, raw, DATASET_ID, NAME, file_ending=default_file_ending(labelled), labels=labels,
                               description=f"fine-tuning set from {Path(request.manifest).name}", n_jobs=request.n_jobs)
        if result.problems:
            raise DeepWMLError(f"the manifest made a dataset with problems: {_mask_problems(result.problems, labelled)}", raw)
    run_command("plan_and_preprocess", ["-d", str(DATASET_ID), "--raw", str(raw), "--preprocessed", str(pre),
                                        "--plan-file", str(start / "plans.json"), "--test-fraction", "0",
                                        "-np", str(request.n_jobs)] + (["--folds", str(request.folds), "--seed", str(request.seed)] if request.folds else []),
                None, "deepwml_finetune")
    folds = [str(k) for k in range(request.folds)] if request.folds else ["all"]
    tuned = results / DATASET / plan.name
    for fold in folds:
        _train(request, start, plan, fold, pre, results)
    tta = carry_flip_tta(start, tuned, folds)
    if tta:
        _log("the fine-tuned model predicts with left-right flip TTA, as the model it started from does "
             "(deepwml_predict --no-tta: without)")
    crossval = postprocessing = None
    if request.folds:
        crossval, postprocessing = _cross_validate(request, work, raw / DATASET, default_file_ending(labelled), tuned, start,
                                                   folds, pre / DATASET / "splits.json", tta,
                                                   {c.case_id: c.meta.centre for c in labelled}, plan.n_channels)
        if request.ship == "all":
            _train(request, start, plan, "all", pre, results)
            _carry_settings(tuned, postprocessing, folds)
    shipped = ["all"] if request.ship == "all" else folds
    scores = None
    if held:
        scores = score_holdout(work, raw / DATASET, default_file_ending(labelled), held, {
            "finetuned": (tuned, shipped, "latest"), "start": (start, None, "best")}, request.device, request.ignore_label,
            {"finetuned": "finetuned_" + "-".join(shipped)} if request.folds else None)
        for name, label in (("finetuned", "fine-tuned"), ("start", "start model")):
            _log(f"{label} on the {len(held)} scan(s) kept aside: mean Dice {scores['models'][name]['mean_dice']:.3f}, "
                 f"lesion F1 {scores['models'][name]['mean_lesion_f1']:.3f}")
    trained = [c for c in labelled if c.split == "Tr"]
    card = _card(request, start, plan, trained, [tuned / f"fold_{f}" for f in folds], scores, tta, crossval, postprocessing,
                 tuned / "fold_all" if request.ship == "all" else None)
    install_as_folder(tuned, shipped, "latest", card, out)
    what = f" ({len(folds)} fold networks, their probabilities averaged)" if len(shipped) > 1 else ""
    _log(f"installed the fine-tuned model in {out}{what}; use it with: deepwml_predict -i SCANS -o OUT -m {out}")
    return out


def _train(request: FinetuneRequest, start: Path, plan: Plan, fold: str, pre: Path, results: Path) -> None:
    """Fine-tune one fold from the start model's weights (skipped when trained; an interrupted one continues)."""
    fold_dir = results / DATASET / plan.name / f"fold_{fold}"
    if (fold_dir / "validation" / "summary.json").is_file():
        return
    args = ["-d", str(DATASET_ID), fold, "-p", plan.name, "--preprocessed", str(pre), "--results", str(results),
            "--epochs", str(request.epochs), "--seed", str(request.seed), "--device", request.device]
    args += ["--iterations", str(request.iterations)] if request.iterations else []
    if (fold_dir / "checkpoint_latest.pth").is_file():
        args.append("--continue")  # an interrupted run keeps the weights' origin and rate its checkpoint records
    else:
        args += ["--pretrained", str(start)] + (["--lr", str(request.lr)] if request.lr is not None else [])
    run_command("train", args, None, "deepwml_finetune")


def _cross_validate(request: FinetuneRequest, work: Path, raw: Path, ending: str, tuned: Path, start: Path,
                    folds: List[str], splits: Path, tta: bool, centres: Dict[str, str],
                    n_channels: int = 1) -> Tuple[Dict, Optional[Dict]]:
    """Score every trained scan out of fold (at the plan's threshold), then fit the probabilities' temperatures
    (deepwml_calibrate) and choose the threshold and lesion filters (deepwml_find_postprocessing) on the same
    out-of-fold predictions, unless the folds hold them already; the scores and the choice."""
    validation = fold_validation(splits, len(folds))
    scores = kept_scores(work, validation)
    if scores is None:  # scored before the search, so that its choice does not flatter the figures
        scores = score_crossval(work, raw, ending, validation, tuned, start, request.device, tta, request.ignore_label,
                                centres, n_channels)
    for name, label in (("finetuned", "fine-tuned, out of fold"), ("start", "start model")):
        _log(f"{label} on the {len(scores['cases'])} scans of the {len(folds)} folds: mean Dice "
             f"{scores['models'][name]['mean_dice']:.3f}, lesion F1 {scores['models'][name]['mean_lesion_f1']:.3f}")
    _log(verdict(scores))
    chosen = _searched_postprocessing(tuned, folds)
    if chosen is None:
        # each fold's validation scans, predicted by that fold alone: what the scores above were measured on
        tuning = (["-m", str(tuned), "-f", *folds, "--checkpoint", "latest", "--raw", str(raw.parent), "--preprocessed",
                   str(splits.parent.parent), "--device", request.device] + (["--tta"] if tta else [])
                  + ([] if request.ignore_label is None else ["--ignore-label", str(request.ignore_label)]))
        # calibrated first: the threshold refers to the calibrated probabilities (and calibrating removes a choice)
        if fold_calibration(tuned, folds, tta) is None:
            run_command("calibrate", tuning, None, "deepwml_finetune")
        run_command("find_postprocessing", tuning, None, "deepwml_finetune")
        chosen = _searched_postprocessing(tuned, folds)
    return scores, chosen


def fold_calibration(tuned: Path, folds: List[str], tta: bool) -> Optional[Dict]:
    """What deepwml_calibrate stored in these folds' latest checkpoints for these folds together (fitted with flip TTA
    when ``tta``): {temperature, calibration}, None before it has."""
    from deepwml.calibration.fit import CALIBRATION, TEMPERATURE
    from deepwml.inference.model_loading import CHECKPOINT_FILES
    from deepwml.training.checkpoint import read_checkpoint

    stored = [read_checkpoint(tuned / f"fold_{fold}" / CHECKPOINT_FILES["latest"]) for fold in folds]
    records = [ckpt.get(CALIBRATION) for ckpt in stored]
    fitted = all(isinstance(r, dict) and r.get("folds") == folds and bool(r.get("tta")) == tta for r in records)
    return {TEMPERATURE: stored[0].get(TEMPERATURE), CALIBRATION: records[0]} if fitted else None


def _carry_settings(tuned: Path, chosen: Dict, folds: List[str]) -> None:
    """Give fold 'all' the temperatures, threshold, lesion filters and TTA fitted on the fold networks' out-of-fold
    predictions (written once: a resumed run that finds them there leaves the checkpoint alone)."""
    from deepwml.calibration.fit import CALIBRATION, TEMPERATURE, store_in_checkpoints
    from deepwml.inference.model_loading import CHECKPOINT_FILES, check_model
    from deepwml.inference.postprocessing import POSTPROCESSING
    from deepwml.training.checkpoint import read_checkpoint

    applied = "fold all: fine-tuned on every scan with the folds' schedule"
    wanted = {POSTPROCESSING: dict(chosen, record=dict(chosen["record"], applied_to=applied))}
    calibration = fold_calibration(tuned, folds, bool(chosen.get("tta")))
    if calibration is not None:  # a run from before the calibration step has none to carry
        wanted[TEMPERATURE] = calibration[TEMPERATURE]
        wanted[CALIBRATION] = dict(calibration[CALIBRATION], applied_to=applied)
    ckpt = read_checkpoint(tuned / "fold_all" / CHECKPOINT_FILES["latest"])
    if any(ckpt.get(key) != value for key, value in wanted.items()):
        store_in_checkpoints(check_model(tuned, ["all"], "latest"), wanted)


def _searched_postprocessing(tuned: Path, folds: List[str]) -> Optional[Dict]:
    """The postprocessing deepwml_find_postprocessing stored in these folds' latest checkpoints, None before it has."""
    from deepwml.inference.model_loading import CHECKPOINT_FILES
    from deepwml.training.checkpoint import read_checkpoint

    stored = [read_checkpoint(tuned / f"fold_{fold}" / CHECKPOINT_FILES["latest"]).get("postprocessing") for fold in folds]
    searched = all(isinstance(s, dict) and s.get("record", {}).get("objective") and s["record"].get("folds") == folds
                   for s in stored)
    return stored[0] if searched else None


def carry_flip_tta(start: Path, tuned: Path, folds: Sequence[str] = ("all",)) -> bool:
    """Give the fine-tuned model (``folds``, checkpoint latest) the start model's flip TTA, with the plan's threshold
    and no lesion filter; returns whether it predicts with TTA. The start's temperatures, threshold and filters were
    fitted to its own probabilities and are not carried; whether a slice's mirror image helps is a matter of the
    anatomy, not of the site (measured in benchmarks/README.md, "A site unlike the generator")."""
    from deepwml.calibration.fit import store_in_checkpoints
    from deepwml.inference.model_loading import check_model, load_checkpoint, load_fold_states
    from deepwml.inference.postprocessing import POSTPROCESSING, MaskSettings, read_postprocessing
    from deepwml.training.pretrained_weights import start_checkpoint

    path = start_checkpoint(str(start))  # the checkpoint the weights came from
    stored = read_postprocessing(load_checkpoint(path), path, Plan.load(start / "plans.json").network.out_channels)
    if stored is None or not stored.tta:
        return False
    tuned_spec = check_model(tuned, list(folds), "latest")
    load_fold_states(tuned_spec)
    wanted = MaskSettings(tuned_spec.plan.inference.threshold, tta=True)
    if tuned_spec.stored_postprocessing() is None:
        store_in_checkpoints(tuned_spec, {POSTPROCESSING: dict(wanted.as_record(), record={
            "carried_from": str(start), "what": "the start model's left-right flip TTA; the plan's threshold, no lesion filter"})})
    return True


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        raise DeepWMLError("manifest not readable", path) from None


def _scans_digest(cases: List) -> str:
    """What identifies the manifest's scans and labels cheaply: every file's path, size and time stamp (each file of
    a DICOM folder), so that images replaced under an unchanged CSV are not taken for the data already prepared."""
    def files(path: Path) -> List[Path]:
        path = Path(path)
        if path.is_dir():
            return sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
        return [path]

    entries = []
    for case in cases:
        label = getattr(case.label, "seg", case.label)  # a DICOM SEG label: its file
        for path in files(case.image) + (files(label) if label is not None else []):
            try:
                stat = path.stat()
            except OSError:
                raise DeepWMLError(f"case {case.case_id}: file not readable", path) from None
            entries.append([case.case_id, str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _claim(work: Path, identity: dict) -> None:
    """Refuse a work folder that holds a run with another manifest, start or schedule (its data would be reused)."""
    state = work / STATE
    if state.is_file():
        earlier = read_json(state)
        changed = [k for k, v in identity.items() if earlier.get(k) != v]
        if changed:
            raise DeepWMLError(f"holds a fine-tuning run with another {', '.join(changed)}; give another --work or delete it",
                               work)
    elif work.exists() and any(work.iterdir()):
        raise DeepWMLError("is not empty and holds no deepwml_finetune run; give another --work", work)
    work.mkdir(parents=True, exist_ok=True)
    write_json(state, identity)


def _card(request: FinetuneRequest, start: Path, plan: Plan, cases: List, fold_dirs: List[Path], scores: Optional[dict] = None,
          tta: bool = False, crossval: Optional[dict] = None, postprocessing: Optional[dict] = None,
          shipped_all: Optional[Path] = None) -> str:
    """The model card: what it was tuned on, from what, how, and what it does not know (``shipped_all``: the network
    trained on every scan after the folds, when that is what is installed)."""
    summaries = [read_json(d / "validation" / "summary.json") if (d / "validation" / "summary.json").is_file() else {}
                 for d in fold_dirs]
    fits = [s.get("median_dice") for s in summaries]
    hours = [training_hours(d) for d in fold_dirs + ([shipped_all] if shipped_all else [])]
    centres = sorted({c.meta.centre for c in cases})
    folds = len(fold_dirs) if crossval is not None else 0
    scheme = ("fold 'all' (every scan trained on)" if not folds else
              f"{folds} folds (one network per fold, each trained on the scans of the other folds; shipped together, "
              "their probabilities averaged)" if shipped_all is None else
              f"{folds} folds (one network per fold, each trained on the scans of the other folds) for the figures below, "
              "then one network on every scan (fold 'all'), which is what is installed")
    if folds:
        fit_line = ("- Validation of each fold on its own held-out scans (median per-slice Dice): "
                    + ", ".join(f"{f:.3f}" if isinstance(f, (int, float)) else "not recorded" for f in fits))
    else:
        fit_line = (f"- Fit on its own training scans (median per-slice Dice): {fits[0]:.3f}" if isinstance(fits[0], (int, float))
                    else "- Fit on its own training scans: not recorded")
    lines = [
        f"# Fine-tuned model ({plan.name})",
        "",
        f"- Started from: {start} (its card: {start / 'MODEL_CARD.md'})",
        f"- Fine-tuned on: {len(cases)} labelled scan(s) of {Path(request.manifest).resolve()} (centres: {', '.join(centres)})"
        + ("; masks: corrected lesion-id maps (--lesion-id-masks), every value above 0 lesion" if request.lesion_id_masks else "")
        + (f"; mask value {request.ignore_label} left out of training and scores (--ignore-label)"
           if request.ignore_label is not None else ""),
        f"- Schedule: {request.epochs} epochs" + (f" x {request.iterations} iterations" if request.iterations else "")
        + f", {scheme}, seed {request.seed}, learning rate "
        + (f"{request.lr:g}" if request.lr is not None
           else f"{plan.training.learning_rate * FINETUNE_LR_FACTOR:g} (the fine-tuning default, {FINETUNE_LR_FACTOR:g} x the plan's)"),
        (f"- Training time: {sum(hours) * 60:.1f} min (device {request.device})" if all(h is not None for h in hours)
         else "- Training time: not recorded"),
        fit_line,
    ]
    calibration = None
    if crossval is not None:
        calibration = fold_calibration(fold_dirs[0].parent, [d.name[len("fold_"):] for d in fold_dirs], tta)
        lines += crossval_card_lines(crossval, postprocessing, calibration and calibration["calibration"])
    if shipped_all is not None:
        lines.append("- Installed: the network fine-tuned on every scan, with the threshold and lesion filters chosen on the "
                     "fold networks' out-of-fold predictions; the cross-validated figures are the fold networks', an "
                     "estimate for it (benchmarks/README.md, \"Cross-validated fine-tuning\": one network on every scan "
                     "was level with the folds averaged)")
    if tta and postprocessing is None:
        lines.append(f"- Predicts with left-right flip TTA, as the model it started from does, at the plan's threshold "
                     f"{plan.inference.threshold:g} (deepwml_predict --no-tta: without). Calibrating removes that "
                     "setting: calibrate with deepwml_calibrate --tta, then deepwml_find_postprocessing --tta, to keep it")
    if scores:
        lines += card_lines(scores)
    if scores or crossval is not None:
        lines += ["", "Limits: " + ("the scans kept aside are few" if scores else "the scans are few") + ", so these figures "
                  "are rough; check the model on more labelled scans", "(deepwml_bids group --reference, deepwml_evaluate) "
                  + ("before relying on it." if calibration else "and deepwml_calibrate them for honest probabilities before relying on it."),
                  "Research use only, not a medical device."]
    else:
        lines += ["", "Limits: every labelled scan was trained on, so no figure here measures the model on scans it has not seen;",
                  "check it on a few more labelled scans with deepwml_evaluate (and deepwml_calibrate them for honest",
                  "probabilities) before relying on it, keep some aside with --holdout, or cross-validate with --folds. "
                  "Research use only, not a medical device."]
    return "\n".join(lines) + "\n"
