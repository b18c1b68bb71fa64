"""The model card written beside a shipped model's weights: training data, recipe, time, figures and limits.

Text only, from the recipe (deepwml.pretrained.recipe) and the record of what its run did (``recipe.json``).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, List, Optional

from deepwml.pretrained.recipe import ANATOMY_SCORES, Recipe


def _rounded(figures: Dict[str, Any]) -> Dict[str, Any]:
    """Floats to 3 decimals for reading."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


def _each_fold(values: Dict[str, Any], unit: str = "") -> str:
    """One figure per fold, e.g. 'fold 0 0.712, fold 1 0.705' ('?' when there is none)."""
    return ", ".join(f"fold {fold} {value}{unit}" for fold, value in values.items()) or "?"


def _per_fold(record: Dict[str, Any], key: str) -> str:
    """One validation figure of each fold."""
    return _each_fold({fold: _rounded(summary).get(key, "?") for fold, summary in record.get("validation", {}).items()})


def _validated_text(recipe: Recipe, record: Dict[str, Any]) -> str:
    """Which checkpoint the validation figures are of, when the shipped one is another (--checkpoint latest)."""
    if recipe.checkpoint == "best":
        return ""
    best = {fold: summary.get("epoch", "?") for fold, summary in record.get("validation", {}).items()}
    epochs = f"epoch {next(iter(best.values()))}" if len(best) == 1 else ", ".join(f"fold {f} epoch {e}" for f, e in best.items())
    return f" (of the best checkpoint, {epochs or '?'}; the shipped network is the last, epoch {recipe.epochs})"


def _training_time(record: Dict[str, Any], key: str = "training_hours") -> str:
    """'0.82 h' for one fold, 'fold 0 0.82 h, fold 1 0.79 h' for several (from each fold's log)."""
    hours = record.get(key) or {}
    return f"{next(iter(hours.values()))} h" if len(hours) == 1 else _each_fold(hours, " h")


def _recipe_text(recipe: Recipe, record: Dict[str, Any]) -> str:
    """The recipe section's sentence: folds, schedule, distillation, starting weights, time."""
    r = asdict(recipe)
    schedule = f"{r['epochs']} epochs x {r['iterations']} iterations, seed {r['seed']}, checkpoint `{r['checkpoint']}`"
    if recipe.learning_rate is not None and recipe.start_from is None:  # with a start model, _start_text says it
        schedule += f", learning rate {recipe.learning_rate:g}"
    if recipe.distill_start:
        from deepwml.training.distillation import DEFAULT_WEIGHT

        weight = DEFAULT_WEIGHT if recipe.distill_weight is None else recipe.distill_weight
        text = (f"Preset `{r['preset']}`, {recipe.folds_text()} (80 % train, 20 % validation), {schedule}: one network that "
                f"starts from the start model's weights and learns its probabilities beside the labels (`deepwml_train "
                f"--pretrained M --distill-from M`: loss {1 - weight:g} x labels + {weight:g} x the start model's "
                f"probabilities), no teacher folds trained; training {_training_time(record)} on the machine that made it; "
                f"the recipe's last call {record.get('hours', '?')} h (finished stages are skipped).")
    elif not recipe.distill:
        text = (f"Preset `{r['preset']}`, {recipe.folds_text()} (each 80 % train, 20 % validation), {schedule}; training "
                f"{_training_time(record)} on the machine that made it; the recipe's last call {record.get('hours', '?')} h "
                "(finished stages are skipped).")
    else:
        from deepwml.training.distillation import DEFAULT_WEIGHT

        text = (f"Preset `{r['preset']}`. Teachers: folds {', '.join(recipe.folds)} (each 80 % train, 20 % validation), {schedule}. "
                f"Shipped: one network of the same size distilled from them on fold {recipe.folds[0]}'s split (`deepwml_train "
                f"--distill-from`: loss {1 - DEFAULT_WEIGHT:g} x labels + {DEFAULT_WEIGHT:g} x the teachers' averaged "
                f"probabilities), same schedule. Training on the machine that made it: teachers "
                f"{_training_time(record, 'teacher_training_hours')}, distilled network {_training_time(record)}; the recipe's "
                f"last call {record.get('hours', '?')} h (finished stages are skipped).")
    return text + _start_text(record, recipe.learning_rate)


def _start_text(record: Dict[str, Any], learning_rate: Optional[float] = None) -> str:
    """The starting weights of a recipe run with ``--start-from`` (and ``learning_rate``: the recipe's own rate), in
    words ('' when they were random)."""
    start = record.get("start_model")
    if not start:
        return ""
    from deepwml.training.pretrained_weights import FINETUNE_LR_FACTOR

    digests = ", ".join(d[:12] for d in start.get("sha256", []))
    return (f" Every network started from the weights of `{start['source']}` (generator version {start.get('generator_version') or '?'}; "
            f"checkpoint sha256 {digests}; its card is the MODEL_CARD.md of the package version that shipped it), at "
            + (f"learning rate {learning_rate:g}" if learning_rate is not None else
               f"{FINETUNE_LR_FACTOR:g} x the plan's learning rate (`deepwml_train --pretrained`)") + ", not from random weights.")


def _heldout_text(figures: Dict[str, Any]) -> str:
    """The held-out headline figures in words."""
    fig = _rounded(figures)
    return (f"median per-slice Dice {fig.get('slice_median_dice', '?')}, sensitivity {fig.get('slice_median_sensitivity', '?')}, "
            f"precision {fig.get('slice_median_precision', '?')}; case mean Dice {fig.get('case_mean_dice', '?')}, median HD95 "
            f"{fig.get('case_median_hd95_mm', '?')} mm"
            + (f"; ECE over voxels with probability >= 0.05 {fig['candidate_ece']}" if fig.get("candidate_ece") is not None else ""))


def _centres_text(recipe: Recipe) -> str:
    """Which synthetic centres the model learnt from, in words."""
    if not recipe.centres:
        return "all twelve centres of Zhang, Duan et al. 2021, MS / NMOSD / CSVD"
    return f"only centre{'s' if len(recipe.centres) > 1 else ''} {', '.join(recipe.centres)} of Zhang, Duan et al. 2021"


def _card_header(recipe: Recipe, record: Dict[str, Any], title: str, labels: str) -> List[str]:
    """The model card's title, data and recipe sections."""
    r = asdict(recipe)
    option = (" --anatomy" + (" --lesion-class" if recipe.lesion_class else "")) if recipe.kind == "anatomy" else ""
    return [
        f"# DeepWML pretrained model: {title}",
        "",
        f"Made by `deepwml_train_pretrained{option}` (deepwml/pretrained/recipe.py); the same command with the settings below",
        "reproduces it. Loaded weights-only; the manifest holds each file's SHA-256.",
        "",
        "## Training data",
        f"Synthetic only: `deepwml_make_synthetic{option}` generator version {record.get('generator_version')}, seed {r['seed']}, "
        f"scale {r['scale']} ({_centres_text(recipe)}"
        + (f"; skull-stripped share {recipe.skull_stripped}" if recipe.skull_stripped != "auto" else "")
        + f"), no real scans; {labels}.",
        "",
        "## Recipe",
        _recipe_text(recipe, record),
        "",
    ]


def model_card(recipe: Recipe, record: Dict[str, Any]) -> str:
    """The model card's Markdown: data, recipe, time, figures, limits."""
    if recipe.kind == "anatomy":
        return anatomy_model_card(recipe, record)
    figures = record.get("figures", {})
    r = asdict(recipe)
    teachers = []
    if recipe.distill:
        teachers = [f"- The teachers ({recipe.folds_text()}) on the same set: {_heldout_text(record.get('teacher_figures', {}))}.",
                    f"- The teachers' validation, median per-slice Dice: "
                    f"{_per_fold({'validation': record.get('teacher_validation', {})}, 'median_dice')}"]
    lines = _card_header(recipe, record, "white-matter hyperintensities on thick-slice 2D FLAIR", "labels: the lesion masks") + [
        "## Figures",
        f"- Validation, median per-slice Dice: {_per_fold(record, 'median_dice')}{_validated_text(recipe, record)}",
        f"- Held-out synthetic set (seed {r['heldout_seed']}, {figures.get('heldout_cases', '?')} cases; {recipe.shipped_text()}): "
        f"{_heldout_text(figures)}.",
        *teachers,
        *_calibration_lines(record),
        *_postprocessing_lines(record),
        "",
        "## Limits",
        "- Trained on synthetic scans only: expect lower accuracy on real scans than on the figures above; measure it on your own",
        "  labelled scans (`deepwml_evaluate`) and fine-tune with `deepwml_train ... --pretrained builtin` when you have a few.",
        "- 2D axial FLAIR, 3-8 mm slices; not for 3D isotropic FLAIR, other contrasts, children or tumours.",
        "- Research use; not a medical device.",
        "",
    ]
    return "\n".join(lines)


def _calibration_lines(record: Dict[str, Any]) -> List[str]:
    """The card's line on the probability calibration (none before calibration existed)."""
    c = record.get("calibration")
    if not c:
        return []
    shown = " skull-stripped to the anatomy model's brain, as `deepwml_predict` shows them," if c.get("skull_strip") else ""
    return [f"- Probabilities calibrated (`deepwml_calibrate`) on {c['cases']} synthetic cases (seed {c['seed']}){shown}: temperatures "
            f"{c['temperature_below']} below and {c['temperature_above']} above the 0.5 threshold (masks unchanged); ECE over "
            f"voxels with probability >= 0.05 on those cases {c['candidate_ece_before']} -> {c['candidate_ece_after']}."]


def _postprocessing_lines(record: Dict[str, Any]) -> List[str]:
    """The card's line on the postprocessing chosen for the model (none before it was chosen)."""
    c = record.get("postprocessing")
    if not c:
        return []
    from deepwml.inference.postprocessing import MaskSettings

    settings = MaskSettings.from_record(c).describe()
    before, after = c["before"], c["after"]
    return [f"- Postprocessing chosen (`deepwml_find_postprocessing`, objective {c['objective']}) on the same {c['cases']} "
            f"cases: {settings}; case mean Dice {before['dice']} -> {after['dice']}, lesion F1 {before['lesion_f1']} -> "
            f"{after['lesion_f1']} against the plain 0.5 threshold there. The held-out figures above are with it; "
            "`deepwml_predict --no-postprocessing` leaves it out" + (" and `--no-tta` the flip" if c.get("tta") else "")
            + "."]


def anatomy_model_card(recipe: Recipe, record: Dict[str, Any]) -> str:
    """The anatomy model's card: classes, data, recipe, held-out Dice per class, limits."""
    fig = _rounded(record.get("figures", {}))
    r = asdict(recipe)
    scores = ", ".join(f"{name.replace('_', ' ')} {fig.get(f'{name}_dice', '?')}" for name in ANATOMY_SCORES)
    lines = _card_header(recipe, record, "anatomy from thick-slice 2D FLAIR (issue #14)",
                         "labels: the generator's anatomy (0 background, 1 white matter and deep grey, 2 lateral ventricle, "
                         "3 cortex, 4 infratentorial: cerebellum and brainstem"
                         + ("; 5 lesion in the parenchyma, which its map gives back to the tissue around each lesion, so "
                            "that lesions are not taken for cortex" if recipe.lesion_class else "") + ")") + [
        "## Figures",
        f"- Validation: median over cases of the mean foreground Dice, {_per_fold(record, 'median_dice')}",
        f"- Held-out synthetic set (seed {r['heldout_seed']}, {fig.get('heldout_cases', '?')} cases), Dice per case on the "
        f"input's grid, mean over cases: {scores} (brain = white matter + cortex + infratentorial).",
        "",
        "## Use",
        "`deepwml_predict` runs it beside the lesion model when this install ships it (`--no-anatomy` to skip, "
        "`--anatomy-model` for another one, `--save-anatomy` to write CASE_anatomy).",
        "",
        "## Limits",
        "- Trained on synthetic anatomy only: the classes follow the generator's model of the brain, not an atlas; check it",
        "  on your scans before relying on lesion locations.",
        "- 2D axial FLAIR, 3-8 mm slices; coarse (1.5 mm in-plane): for lesion location classes and volumes, not morphometry.",
        "- Research use; not a medical device.",
        "",
    ]
    return "\n".join(lines)
