"""deepwml_train_pretrained: make the shipped pretrained model (synthesise, plan, train, score, install), resumably."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_device_argument, add_version_argument, run, run_installed


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_train_pretrained."""
    from deepwml.pretrained.recipe import Recipe

    d, a = Recipe.defaults("lesion"), Recipe.defaults("anatomy")

    def default(name: str) -> str:
        """The lesion model's default, and the anatomy model's where it differs."""
        lesion, anatomy = getattr(d, name), getattr(a, name)
        return f"default {lesion}" + (f"; with --anatomy {anatomy}" if anatomy != lesion else "")

    p = argparse.ArgumentParser(
        prog="deepwml_train_pretrained",
        description="Reproduce DeepWML's shipped model: synthetic data (generator version of this install), the "
        "preset, training, a held-out synthetic set of another seed, and the model card. Hours on a CPU; run the "
        "same command again to resume after an interruption. With --anatomy: the anatomy model (issue #14) instead.",
    )
    p.add_argument("--workdir", type=Path, required=True, help="where data, caches and the training run go")
    p.add_argument("--anatomy", action="store_true",
                   help="make the anatomy model (white matter, lateral ventricles, cortex, infratentorial region from the FLAIR) "
                   "from synthetic anatomy labels; --install puts it in deepwml/pretrained/anatomy_flair2d/")
    p.add_argument("--lesion-class", action="store_true", default=None,
                   help="with --anatomy: the model also learns the lesions in the parenchyma as a class of their own "
                   "(deepwml_make_synthetic --lesion-class), so that it does not take them for cortex; its map gives each "
                   "lesion the tissue around it. Trained from random weights or a lesion-aware --start-from model")
    p.add_argument("--install", action="store_true", help="install the result as this package's shipped model (deepwml/pretrained/)")
    p.add_argument("--install-to", type=Path, default=None, help="install the result as a PLAN folder here instead")
    p.add_argument("--seed", type=int, default=None, help=f"synthetic data and training seed ({default('seed')})")
    p.add_argument("--scale", type=float, default=None, help=f"fraction of the 492 synthetic patients ({default('scale')})")
    p.add_argument("--preset", default=None, help=f"plan preset, or a plan .json file ({default('preset')})")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs ({default('epochs')})")
    p.add_argument("--iterations", type=int, default=None, help=f"iterations per epoch ({default('iterations')})")
    p.add_argument("--folds", nargs="+", default=None,
                   help=f"folds to train and ship; several make an ensemble whose probabilities are averaged "
                   f"(default {' '.join(d.folds)}; with --anatomy {' '.join(a.folds)}). A work folder resumes with more or "
                   "fewer folds of the same recipe")
    p.add_argument("--distill", action=argparse.BooleanOptionalAction, default=None,
                   help="ship one network distilled from the trained folds (deepwml_train --distill-from) instead of the "
                   f"folds themselves: about the ensemble's accuracy at one network's prediction time (default "
                   f"{'on' if d.distill else 'off'}). A work folder whose folds are trained takes it on")
    p.add_argument("--start-from", default=None, metavar="builtin|PLAN_DIR",
                   help="start every network from this model's weights (the shipped one: 'builtin') at deepwml_train "
                   "--pretrained's fine-tuning learning rate, not from random weights: re-trains the shipped model on a new "
                   "generator version in fewer epochs. The model is copied into the work folder first and recorded on the card")
    p.add_argument("--distill-start", action="store_true", default=None,
                   help="with --start-from and one fold: train one network from the start model's weights that learns its "
                   "probabilities beside the labels (deepwml_train --pretrained M --distill-from M), training no teacher "
                   "folds: the shipped network moved into another plan of the same preprocessing (e.g. --preset "
                   "cpu_fast_robust_bn, batch norm: faster at prediction). Implies --no-distill and one fold (default 0)")
    p.add_argument("--lr", dest="learning_rate", type=float, default=None,
                   help="deepwml_train --lr of every trained network (default: the plan's; with --start-from the "
                   "fine-tuning rate)")
    p.add_argument("--distill-weight", type=float, default=None,
                   help="deepwml_train --distill-weight of the distilled network (default: deepwml_train's)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default=None,
                   help="which checkpoint of each trained network is scored and shipped: the one of the best validation "
                   "Dice, or the last ('latest', as nnU-Net ships its final checkpoint: a short fine-tuning schedule's "
                   f"validation peak is mostly noise) ({default('checkpoint')}). A work folder whose networks are trained "
                   "takes either; distillation teachers are always their best checkpoint")
    p.add_argument("--heldout-seed", type=int, default=None, help=f"seed of the held-out synthetic set ({default('heldout_seed')})")
    p.add_argument("--heldout-scale", type=float, default=None, help=f"scale of the held-out set ({default('heldout_scale')})")
    p.add_argument("--centres", default=None, metavar="A,B,...",
                   help="synthetic centres of every data set, as deepwml_make_synthetic --centres (default: all twelve)")
    p.add_argument("--skull-stripped", default=None, metavar="SHARE",
                   help="share of skull-stripped scans in the training set, as deepwml_make_synthetic --skull-stripped "
                   "(default auto: the generator's quarter); the held-out set keeps auto")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="fit the lesion model's temperatures and postprocessing on left-right flip-averaged "
                   "probabilities, so that deepwml_predict predicts it with TTA by default (default "
                   f"{'on' if d.tta else 'off'}; about twice the network's time at prediction). A work folder whose "
                   "networks are trained takes either")
    p.add_argument("-np", "--num-processes", dest="n_jobs", type=int, default=2, help="worker processes for data preparation")
    add_device_argument(p)
    add_version_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    import dataclasses

    from deepwml.pretrained import ANATOMY_DIR, BUILTIN_DIR
    from deepwml.pretrained.recipe import Recipe, run_recipe

    a = build_parser().parse_args(argv)
    given = {k: getattr(a, k) for k in ("seed", "scale", "preset", "epochs", "iterations", "heldout_seed", "heldout_scale", "distill", "start_from",
                                      "checkpoint", "skull_stripped", "tta", "distill_start", "learning_rate", "distill_weight",
                                      "lesion_class")}
    if a.distill_start:
        # one network from the start model: no teacher folds to distil, one fold unless named
        given["distill"] = False if a.distill is None else a.distill
        if a.folds is None:
            given["folds"] = ("0",)
    if a.folds is not None:
        from deepwml.training.preprocessed import parse_fold

        given["folds"] = tuple(dict.fromkeys(str(parse_fold(f)) for f in a.folds))
    if a.centres is not None:
        from deepwml.synthetic.centres import select_centres

        given["centres"] = tuple(c.name for c in select_centres(a.centres))
    if a.skull_stripped is not None:
        from deepwml.synthetic.dataset import skull_strip_setting

        skull_strip_setting(a.skull_stripped)  # refused now, not after the first stage
    recipe = dataclasses.replace(Recipe.defaults("anatomy" if a.anatomy else "lesion"), **{k: v for k, v in given.items() if v is not None})
    target = a.install_to
    if a.install and target is None:
        target = ANATOMY_DIR if a.anatomy else BUILTIN_DIR
    run_recipe(recipe, a.workdir, target, n_jobs=a.n_jobs, device=a.device)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


def entry() -> None:
    """The installed command (and ``python -m``): main(), then exit without the interpreter's teardown
    (deepwml.cli.common.run_installed)."""
    run_installed(main)


if __name__ == "__main__":
    entry()
