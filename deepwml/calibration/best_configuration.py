"""Choose among a dataset's trained plans, and their ensembles of two, on out-of-fold predictions
(``deepwml_find_best_configuration``), as nnU-Net's find_best_configuration chooses after cross-validation.

Every fold's validation cases are predicted by that fold alone, for every plan, as deepwml_predict predicts them (the
plan's test-time augmentation, back on the input's grid, the model's calibration applied, skull-stripped and cut by
the anatomy rules where predict would: deepwml.calibration.fit_input); an ensemble of two plans
averages their maps as deepwml_ensemble does. Each configuration's case is reduced to the postprocessing search's
count table (deepwml.calibration.postprocessing_search), so one case's maps are in memory at a time, and the tables
are kept per case on disk: an interrupted run resumes where it stopped.

A configuration is scored with its own threshold and with the best postprocessing the search finds for it (kept only
when it beats the threshold by the margin), the way it would be used; an ensemble, which costs the time of both its
plans, is chosen only when it beats the best single plan by the same margin.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from deepwml.calibration.case_cache import CaseCache, checkpoint_stamps, run_key
from deepwml.calibration.case_reduction import ConfigurationCounts, PlansCase, reduced_in_order
from deepwml.calibration.fit import (AnatomyRun, CaseGroup, case_label, case_outputs, declared_ignore_label,
                                    validation_groups)
from deepwml.calibration.fit_input import FitInput, fit_input
from deepwml.calibration.postprocessing_search import (COUNTS_VERSION, MIN_GAIN, SearchGrid, SearchResult, case_scores,
                                                       choose, objective_of)
from deepwml.calibration.temperature import calibrate_probabilities
from deepwml.constants import MIN_CORTEX_CONTRAST
from deepwml.inference.ensemble import DEFAULT_THRESHOLD
from deepwml.inference.model_loading import ModelSpec, build_fold_networks, check_model, load_fold_states
from deepwml.inference.postprocessing import MaskSettings
from deepwml.inference.predictor import SlicePredictor
from deepwml.inference.thin_slices import model_thin_slab
from deepwml.training.device import DeviceSetup
from deepwml.utils.atomic import atomic_path, write_json, write_text
from deepwml.utils.errors import DeepWMLError

#: the files written into the dataset's results folder
INFORMATION, INSTRUCTIONS, SCORES = "inference_information.json", "inference_instructions.txt", "crossval_scores.csv"
#: per-case count tables of an unfinished (or finished) run, under a key of what was predicted
CACHE = ".best_configuration_cache"


@dataclass(frozen=True)
class Configuration:
    """One plan, or two plans whose probability maps are averaged."""

    plans: Tuple[str, ...]

    @property
    def name(self) -> str:
        """'cpu_fast' or 'cpu_fast+paper'."""
        return "+".join(self.plans)

    @property
    def is_ensemble(self) -> bool:
        """True for two plans averaged."""
        return len(self.plans) > 1


@dataclass
class Ranked:
    """A configuration's settings and case means with its own threshold and with its chosen postprocessing."""

    configuration: Configuration
    result: SearchResult
    #: per case (id, Dice and lesion F1 with its own threshold and with the chosen settings)
    cases: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def score(self) -> float:
        """The objective with the chosen postprocessing: what the configuration gets used as recommended."""
        return float(self.result.after["objective"])


@dataclass
class BestConfiguration:
    """Every configuration ranked, the one chosen, and where the results were written."""

    ranked: List[Ranked]
    best: Ranked
    record: Dict[str, Any]
    written: List[Path]
    #: inference_instructions.txt's text
    instructions: str


def configurations(plans: Sequence[str], ensembles: bool) -> List[Configuration]:
    """Each plan alone, then (with ``ensembles``) every pair of them."""
    singles = [Configuration((p,)) for p in plans]
    return singles + ([Configuration(pair) for pair in itertools.combinations(plans, 2)] if ensembles else [])


def _own_threshold(specs: Sequence[ModelSpec]) -> float:
    """The threshold a configuration's average is cut at before any search: its plans' when they agree, else
    deepwml_ensemble's default."""
    found = {float(s.plan.inference.threshold) for s in specs}
    return found.pop() if len(found) == 1 else DEFAULT_THRESHOLD


def common_folds(folders: Dict[str, Path], folds: Optional[Sequence[str]], checkpoint: str) -> List[str]:
    """The folds to compare on: ``folds``, else the numbered folds every plan has trained (refused when none is
    shared; fold 'all' validates on its own training cases)."""
    if folds:
        return [str(f) for f in folds]
    trained = {plan: [f for f in check_model(folder, None, checkpoint).folds if f != "all"] for plan, folder in folders.items()}
    shared = [f for f in next(iter(trained.values())) if all(f in t for t in trained.values())]
    if not shared:
        listed = "; ".join(f"{plan}: {' '.join(t) or 'no numbered fold'}" for plan, t in trained.items())
        raise DeepWMLError(f"the plans share no trained fold ({listed}); train the same folds of each plan")
    return shared


def shared_validation(specs: Dict[str, ModelSpec], raw_root: Path, preprocessed_root: Path) -> List[CaseGroup]:
    """Each fold's validation cases, which must be the same for every plan (the dataset's splits): one group a fold."""
    by_plan = {plan: validation_groups(spec, raw_root, preprocessed_root) for plan, spec in specs.items()}
    first_plan, first = next(iter(by_plan.items()))
    for plan, groups in by_plan.items():
        for a, b in zip(first, groups):
            ids_a, ids_b = [c.case_id for c, _ in a.pairs], [c.case_id for c, _ in b.pairs]
            if ids_a != ids_b:
                raise DeepWMLError(f"fold {a.folds[0]} of plans {first_plan} and {plan} was validated on different cases "
                                   f"({len(ids_a)} and {len(ids_b)}): compare plans trained on the same splits",
                                   specs[plan].folder / f"fold_{a.folds[0]}")
    return first


def _cache_key(specs: Dict[str, ModelSpec], candidates: Dict[str, List[MaskSettings]], ignore_label: Optional[int],
               setup: DeviceSetup, shown: Dict[str, FitInput]) -> str:
    """What every case's count tables depend on besides the case's own files: the checkpoints, the candidates, the
    ignore value, the arithmetic (device, precision) and what each plan's network was shown."""
    return run_key({
        "checkpoints": {plan: checkpoint_stamps(spec.checkpoints) for plan, spec in specs.items()},
        "candidates": {name: [c.as_record() for c in cands] for name, cands in candidates.items()},
        "ignore_label": ignore_label,
        "device": str(setup.device), "amp": str(setup.amp_dtype), "counts_version": COUNTS_VERSION,
        "thin_slab_mm": {plan: model_thin_slab(spec.folder) for plan, spec in specs.items()},
        **({"shown": {plan: s.key() for plan, s in shown.items()}} if any(s.runs_anatomy(True) for s in shown.values()) else {}),
    })


def _case_tables(specs: Dict[str, ModelSpec], groups: Sequence[CaseGroup], configs: Sequence[Configuration],
                 candidates: Dict[str, List[MaskSettings]], setup: DeviceSetup, ignore_label: Optional[int],
                 cache: CaseCache, progress: bool, shown: Dict[str, FitInput],
                 workers: int = 1) -> Iterator[Tuple[str, Dict[str, np.ndarray]]]:
    """(case id, count table per configuration) for every validation case, predicted out of fold by every plan
    (segmented as ``shown`` says) and counted in ``workers`` processes beside the networks
    (deepwml.calibration.case_reduction); tables already in ``cache`` are read, new ones written there as each case
    finishes (after an interrupt too, for the cases already predicted)."""
    networks = {plan: dict(zip(spec.folds, build_fold_networks(spec, load_fold_states(spec))))
                for plan, spec in specs.items()}
    temperatures = {plan: spec.calibration() for plan, spec in specs.items()}
    thin_slabs = {plan: model_thin_slab(spec.folder) for plan, spec in specs.items()}
    anatomy: Dict[Path, Any] = {}  # each anatomy model loaded once, when a plan's case first needs it
    counted = ConfigurationCounts(tuple((c.name, c.plans) for c in configs),
                                  {name: tuple(cands) for name, cands in candidates.items()}, dict(shown))
    total = sum(len(g.pairs) for g in groups)

    def work() -> Iterator[Tuple[Any, Path, Optional[Dict[str, np.ndarray]], Optional[PlansCase]]]:
        """Each validation case with its kept tables, or predicted by every plan (when the consumer advances to it)."""
        for group in groups:
            fold = group.folds[0]
            predictors = {plan: SlicePredictor([networks[plan][fold]], spec.plan, setup, tta=spec.plan.inference.tta)
                          for plan, spec in specs.items()}
            for case, label_path in group.pairs:
                stored = cache.load(case, label_path)
                if stored is not None and all(c.name in stored for c in configs):
                    yield case, label_path, {c.name: stored[c.name] for c in configs}, None
                else:
                    yield case, label_path, None, _plans_case(case, label_path, predictors, temperatures, thin_slabs, shown,
                                                              anatomy, setup, ignore_label)

    with tqdm(total=total, desc="deepwml_find_best_configuration", unit="case", disable=not progress) as bar:
        yield from reduced_in_order(work(), counted, workers, cache, bar)


def _plans_case(case: Any, label_path: Path, predictors: Dict[str, SlicePredictor], temperatures: Dict[str, Any],
                thin_slabs: Dict[str, float], shown: Dict[str, FitInput], anatomy: Dict[Path, Any], setup: DeviceSetup,
                ignore_label: Optional[int]) -> PlansCase:
    """A validation case predicted by every plan's fold network (calibrated), with its label."""
    probs, image, labels = {}, None, {}
    for plan, predictor in predictors.items():
        p, image, labels[plan] = case_outputs(predictor, case, thin_slabs[plan], _anatomy(shown[plan], anatomy, setup))
        probs[plan] = calibrate_probabilities(p, temperatures[plan])
    assert image is not None
    lesion, ignore = case_label(case.case_id, label_path, image.geometry, ignore_label)
    return PlansCase(case.case_id, probs, labels, lesion, ignore, image.array, image.geometry)


def _anatomy(shown: FitInput, loaded: Dict[Path, Any], setup: DeviceSetup) -> Optional[AnatomyRun]:
    """case_outputs' ``anatomy`` for a plan shown ``shown`` (its model loaded once into ``loaded``), None when the
    plan's masks need no anatomy map."""
    if not shown.runs_anatomy(True):
        return None
    if shown.anatomy_dir not in loaded:
        from deepwml.inference.anatomy import load_anatomy_model

        loaded[shown.anatomy_dir] = load_anatomy_model(shown.anatomy_dir, setup)
    return AnatomyRun(loaded[shown.anatomy_dir], shown.strip, shown.required)


def rank(tables: Dict[str, List[np.ndarray]], ids: Sequence[str], configs: Sequence[Configuration],
         candidates: Dict[str, List[MaskSettings]], objective: str, min_gain: float) -> Tuple[List[Ranked], Ranked]:
    """Every configuration's postprocessing search and case scores, best first, and the chosen one (an ensemble only
    when it beats the best single plan by ``min_gain``)."""
    ranked = []
    for c in configs:
        counts = np.stack(tables[c.name])
        result = choose(counts, candidates[c.name], objective, min_gain)
        chosen = candidates[c.name].index(result.chosen)
        scores = case_scores(counts)
        cases = [{"case": case_id, "dice": float(scores["dice"][i, 0]), "lesion_f1": float(scores["lesion_f1"][i, 0]),
                  "dice_postprocessed": float(scores["dice"][i, chosen]),
                  "lesion_f1_postprocessed": float(scores["lesion_f1"][i, chosen])} for i, case_id in enumerate(ids)]
        ranked.append(Ranked(c, result, cases))
    ranked.sort(key=lambda r: (-round(r.score, 9), r.configuration.is_ensemble))
    best_single = next(r for r in ranked if not r.configuration.is_ensemble)
    best = ranked[0] if ranked[0].score >= best_single.score + min_gain else best_single
    return ranked, best


def find_best_configuration(results_dir: Path, plans: Sequence[str], setup: DeviceSetup,
                            raw_root: Path, preprocessed_root: Path, folds: Optional[Sequence[str]] = None,
                            checkpoint: str = "best", ensembles: bool = True, objective: str = "both",
                            min_gain: float = MIN_GAIN, ignore_label: Optional[int] = None, grid: SearchGrid = SearchGrid(),
                            progress: bool = True, output: Optional[Path] = None, skull_strip: Optional[bool] = None,
                            anatomy_model: Optional[Path] = None, anatomy: bool = True, keep_outside_brain: bool = False,
                            min_cortex_contrast: float = MIN_CORTEX_CONTRAST, workers: int = 1) -> BestConfiguration:
    """Rank the plans trained in ``results_dir`` (a dataset's results folder) and their pairs on the folds'
    validation cases, segmented as deepwml_predict segments them (deepwml.calibration.fit_input.fit_input: the last
    five arguments before ``workers`` are predict's options of those names; ``skull_strip`` None its default); write the
    ranking, the per-case scores and the commands to predict with the best into ``output`` (default: ``results_dir``).
    ``workers`` > 1: the cases counted in that many processes beside the networks."""
    if len(set(plans)) != len(plans) or not plans:
        raise DeepWMLError("give one or more different plans with -p")
    if not 0 <= min_gain < 1:
        raise DeepWMLError(f"--min-gain must lie in [0, 1), not {min_gain:g}")
    objective_of({"dice": np.zeros(1), "lesion_f1": np.zeros(1)}, objective)  # a wrong objective fails before any work
    folders = {plan: results_dir / plan for plan in plans}
    for plan, folder in folders.items():
        if not (folder / "plans.json").is_file():
            raise DeepWMLError(f"plan {plan} has no trained model here (no plans.json): train it with deepwml_train "
                               f"-d {results_dir.name} -p {plan} FOLD", folder)
    fold_names = common_folds(folders, folds, checkpoint)
    specs = {plan: check_model(folder, fold_names, checkpoint) for plan, folder in folders.items()}
    for plan, spec in specs.items():
        if spec.plan.network.out_channels != 1:
            raise DeepWMLError(f"plan {plan} predicts {spec.plan.network.out_channels} classes; deepwml_find_best_"
                               "configuration compares lesion models (one output channel)", spec.folder)
    if ignore_label is None:  # the dataset's declared ignore value (e.g. WMH 2017's 2), as deepwml_calibrate uses it
        ignore_label = declared_ignore_label(next(iter(specs.values())).folder / "dataset.json")
    configs = configurations(list(plans), ensembles)
    candidates = {c.name: grid.candidates(MaskSettings(_own_threshold([specs[p] for p in c.plans]))) for c in configs}
    groups = shared_validation(specs, raw_root, preprocessed_root)
    output = results_dir if output is None else Path(output).expanduser()
    if not output.is_dir():
        raise DeepWMLError("the output folder does not exist", output)
    shown = {plan: fit_input(spec.folder, skull_strip, anatomy_model, anatomy, keep_outside_brain, min_cortex_contrast)
             for plan, spec in specs.items()}
    cache = CaseCache(output / CACHE / _cache_key(specs, candidates, ignore_label, setup, shown))
    tables: Dict[str, List[np.ndarray]] = {c.name: [] for c in configs}
    ids = []
    for case_id, case_tables in _case_tables(specs, groups, configs, candidates, setup, ignore_label, cache, progress, shown,
                                             workers):
        ids.append(case_id)
        for name, table in case_tables.items():
            tables[name].append(table)
    ranked, best = rank(tables, ids, configs, candidates, objective, min_gain)
    record = _record(results_dir.name, ranked, best, specs, fold_names, checkpoint, objective, min_gain, ignore_label, ids)
    record["segmented_as"] = {plan: s.record() for plan, s in shown.items()}
    instructions = _instructions(results_dir.name, best, fold_names, checkpoint, specs)
    written = write_results(output, record, ranked, instructions)
    return BestConfiguration(ranked, best, record, written, instructions)


def case_objective(ranked: Ranked, objective: str) -> np.ndarray:
    """Each case's objective with the configuration's chosen postprocessing."""
    dice = np.array([c["dice_postprocessed"] for c in ranked.cases])
    f1 = np.array([c["lesion_f1_postprocessed"] for c in ranked.cases])
    return objective_of({"dice": dice, "lesion_f1": f1}, objective)


def paired_test(ranked: Ranked, best: Ranked, objective: str) -> Optional[Dict[str, Any]]:
    """Wilcoxon signed-rank test of a configuration's per-case objective against the chosen one's (the same cases),
    as deepwml_evaluate --against tests two methods; None for the chosen one itself."""
    if ranked is best:
        return None
    from deepwml.evaluation.paired import paired_wilcoxon

    a, b = case_objective(ranked, objective), case_objective(best, objective)
    result = paired_wilcoxon(a, b, "higher")
    return {"test": "Wilcoxon signed-rank, two-sided, per-case objective (postprocessed) against the chosen configuration",
            "mean_difference": round(float(np.mean(a - b)), 4), "cases_differing": int(np.count_nonzero(a != b)),
            # no case differs (or too few pairs): nothing to test
            "p_value": round(result["p"], 4) if result["testable"] else 1.0,
            **({} if result["testable"] else {"not_testable": result["reason"]})}


def _record(dataset: str, ranked: Sequence[Ranked], best: Ranked, specs: Dict[str, ModelSpec], folds: Sequence[str],
            checkpoint: str, objective: str, min_gain: float, ignore_label: Optional[int], ids: Sequence[str]) -> Dict[str, Any]:
    """inference_information.json: what was compared on which cases, every configuration's scores, the choice."""
    return {
        "dataset": dataset,
        "best": best.configuration.name,
        "objective": objective,
        "min_gain": min_gain,
        "source": "validation cases of each fold, each predicted by its own fold (out of fold)",
        "folds": list(folds),
        "checkpoint": checkpoint,
        "ignore_label": ignore_label,
        "cases": list(ids),
        "calibrated": {plan: list(spec.calibration()) != [1.0, 1.0] for plan, spec in specs.items()},
        "configurations": [{
            "name": r.configuration.name,
            "plans": list(r.configuration.plans),
            "own_settings": r.result.default.as_record(),
            "own_scores": r.result.before,
            "postprocessing": r.result.chosen.as_record(),
            "postprocessed_scores": r.result.after,
            "against_chosen": paired_test(r, best, objective),
        } for r in ranked],
        "chosen": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _instructions(dataset: str, best: Ranked, folds: Sequence[str], checkpoint: str,
                  specs: Dict[str, ModelSpec]) -> str:
    """The commands that predict new scans with the chosen configuration, as its scores were measured."""
    settings = best.result.chosen
    fold_args = f" -f {' '.join(folds)}" + (" --checkpoint latest" if checkpoint == "latest" else "")
    after = best.result.after
    lines = [f"Best configuration of {dataset}: {best.configuration.name} "
             f"(case mean Dice {after['dice']:.3f}, lesion F1 {after['lesion_f1']:.3f} on its folds' validation cases, "
             f"with {settings.describe()})", ""]
    if not best.configuration.is_ensemble:
        plan = best.configuration.plans[0]
        if best.result.changed:
            lines += ["Store its postprocessing in the model (chosen again on the same cases; or give the settings to "
                      "each deepwml_predict run):",
                      f"deepwml_find_postprocessing -d {dataset} -p {plan}{fold_args}", ""]
        lines += ["Predict:", f"deepwml_predict -d {dataset} -p {plan}{fold_args} -i INPUT_FOLDER -o OUTPUT_FOLDER"
                  + ("" if best.result.changed or specs[plan].stored_postprocessing() is None else " --no-postprocessing")]
    else:
        lines += ["Predict with each plan, keeping the probability maps, then average them:"]
        lines += [f"deepwml_predict -d {dataset} -p {plan}{fold_args} -i INPUT_FOLDER -o OUTPUT_FOLDER_{plan} "
                  "--save-probabilities" for plan in best.configuration.plans]
        options = f"--threshold {settings.threshold:g}"
        options += f" --min-lesion-ml {settings.min_lesion_ml:g}" if settings.min_lesion_ml > 0 else ""
        options += f" --min-lesion-peak {settings.min_lesion_peak:g}" if settings.min_lesion_peak > 0 else ""
        options += f" --min-lesion-contrast {settings.min_lesion_contrast:g}" if settings.min_lesion_contrast > 0 else ""
        options += f" --min-lesion-spread {settings.min_lesion_spread:g}" if settings.min_lesion_spread > 0 else ""
        # the contrast filter compares each lesion with the scan: deepwml_ensemble reads the scans for it
        options += " --images INPUT_FOLDER" if settings.min_lesion_contrast > 0 else ""
        folders = " ".join(f"OUTPUT_FOLDER_{plan}" for plan in best.configuration.plans)
        lines += [f"deepwml_ensemble -i {folders} -o OUTPUT_FOLDER {options}"]
    return "\n".join(lines) + "\n"


def write_results(output: Path, record: Dict[str, Any], ranked: Sequence[Ranked], instructions: str) -> List[Path]:
    """inference_information.json, inference_instructions.txt and crossval_scores.csv (each written beside itself
    and renamed)."""
    import pandas as pd

    rows = [dict(configuration=r.configuration.name, **case) for r in ranked for case in r.cases]
    with atomic_path(output / SCORES, ".csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    write_json(output / INFORMATION, record)
    write_text(output / INSTRUCTIONS, instructions)
    return [output / INFORMATION, output / INSTRUCTIONS, output / SCORES]
