"""Arguments shared by the commands that tune a trained lesion model on labelled scans it did not learn from
(deepwml_calibrate, deepwml_find_postprocessing): which model, which scans, and the folds' own validation cases."""
from __future__ import annotations

import argparse
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple, TypeVar

from deepwml.cli.common import add_dataset_argument, add_device_argument, add_skull_strip_options
from deepwml.paths import add_root_arguments
from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir

T = TypeVar("T")


def add_model_and_scan_arguments(p: argparse.ArgumentParser, folds_help: str, masks: bool = True) -> None:
    """-m/-d/-p (the model), -i/-l (labelled scans), -f, --checkpoint, --ignore-label, how predict segments the scans
    (add_fit_input_options; ``masks``: a command that scores masks), --device and the data roots."""
    p.add_argument("-m", "--model",
                   help=f"the model's PLAN folder (trained or installed), or '{BUILTIN_ALIAS}' for the shipped model")
    add_dataset_argument(p, required=False)
    p.add_argument("-p", "--plan", help="plan name: with -d, the model trained by deepwml_train in $DEEPWML_RESULTS")
    p.add_argument("-i", "--images", type=Path, help="folder of labelled scans (CASE_0000<ending> or CASE<ending>). "
                   "Without -i/-l, each fold of a model trained here uses its own validation cases (the scans it never "
                   "trained on, from the dataset's raw folder), each predicted by its fold alone: out of fold, as "
                   "cross-validation scores a model")
    p.add_argument("-l", "--labels", type=Path, help="folder of their lesion masks (CASE<ending>: 0/1)")
    p.add_argument("-f", "--folds", nargs="+", help=folds_help)
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best",
                   help="which checkpoint of each fold (default: best; an installed model has one)")
    p.add_argument("--ignore-label", type=int, default=None, help="label value that marks voxels to leave out")
    p.add_argument("-o", "--output", type=Path, help="leave the model as it is and write a tuned copy (the chosen folds "
                   "and checkpoint, weights only, with a manifest) into this new folder; needed for the shipped model, "
                   "which lives inside the DeepWML package")
    add_fit_input_options(p, masks)
    add_device_argument(p)
    add_root_arguments(p)


def add_fit_input_options(p: argparse.ArgumentParser, masks: bool = True) -> None:
    """deepwml_predict's options that change what the lesion model sees (--skull-strip / --no-skull-strip,
    --anatomy-model / --no-anatomy) and, for a command that scores masks (``masks``), the anatomy rules that cut them
    (--keep-outside-brain, --min-cortex-contrast): the scans are segmented as predict will segment them."""
    from deepwml.cli.common import cortex_contrast_setting
    from deepwml.constants import MIN_CORTEX_CONTRAST

    add_skull_strip_options(p, FIT_STRIP_HELP, FIT_NO_STRIP_HELP)
    anatomy = p.add_mutually_exclusive_group()
    anatomy.add_argument("--anatomy-model", type=Path, metavar="PLAN_FOLDER",
                         help="the anatomy model deepwml_predict runs beside the lesion model (default: the shipped one)")
    anatomy.add_argument("--no-anatomy", action="store_true",
                         help="no anatomy model, as deepwml_predict --no-anatomy: nothing stripped"
                         + (", no lesion dropped by its map" if masks else ""))
    if masks:
        p.add_argument("--keep-outside-brain", action="store_true",
                       help="score the masks with the lesions outside the anatomy model's brain kept, as deepwml_predict "
                       "--keep-outside-brain makes them (by default they are dropped, as predict drops them)")
        p.add_argument("--min-cortex-contrast", type=cortex_contrast_setting, default=MIN_CORTEX_CONTRAST, metavar="K",
                       help="score the masks without the cortical and juxtacortical lesions under K x the cortex's median, as deepwml_predict "
                       "--min-cortex-contrast K makes them (default %(default)g, predict's; 0 keeps them)")


#: the tuning commands' --skull-strip / --no-skull-strip: the scans are shown as deepwml_predict shows them
FIT_STRIP_HELP = ("show the lesion model the scans skull-stripped to the anatomy model's brain, as deepwml_predict "
                  "--skull-strip does; by default they are shown as deepwml_predict shows them by default (stripped when "
                  "there is an anatomy model and the lesion model learned skull-stripped scans), so that what is fitted "
                  "suits the probabilities predict then makes")
FIT_NO_STRIP_HELP = "show the lesion model the scans as given (for a model predicted with deepwml_predict --no-skull-strip)"


def shown_to_model(args: argparse.Namespace, folder: Path) -> Any:
    """How the scans reach the lesion model and which anatomy rules cut its masks
    (deepwml.calibration.fit_input.FitInput) for add_fit_input_options: by default as deepwml_predict segments them."""
    from deepwml.calibration.fit_input import fit_input
    from deepwml.constants import MIN_CORTEX_CONTRAST

    return fit_input(folder, args.skull_strip, args.anatomy_model, not args.no_anatomy,
                     getattr(args, "keep_outside_brain", False), getattr(args, "min_cortex_contrast", MIN_CORTEX_CONTRAST))


def model_folder(args: argparse.Namespace) -> Path:
    """The PLAN folder -m or -d/-p names (the shipped model for -m builtin), once it is known where a result may be
    written (check_where_to_write)."""
    from deepwml.inference.model_loading import resolve_model_dir
    from deepwml.paths import results_root

    if args.model == BUILTIN_ALIAS:
        folder = builtin_model_dir()
    else:
        results = results_root(args.results_root) if args.dataset is not None else None
        folder = resolve_model_dir(args.model, args.dataset, args.plan, results)
    check_where_to_write(args, folder)
    return folder


def validation_roots(args: argparse.Namespace) -> Dict[str, Any]:
    """The raw and preprocessed roots when the folds' validation cases are to be used (no -i/-l), else nothing;
    -i without -l (or the reverse), and the shipped model without scans, are refused."""
    from deepwml.paths import preprocessed_root, raw_root
    from deepwml.utils.errors import DeepWMLError

    if (args.images is None) != (args.labels is None):
        raise DeepWMLError("give both -i IMAGES and -l LABELS, or neither (then each fold's validation cases are used)")
    if args.images is not None:
        return {}
    if args.model == BUILTIN_ALIAS:
        raise DeepWMLError("the shipped model's validation cases are not on this machine: give labelled scans with -i IMAGES -l LABELS")
    return {"raw_root": raw_root(args.raw_root), "preprocessed_root": preprocessed_root(args.preprocessed_root)}


def check_where_to_write(args: argparse.Namespace, folder: Path) -> None:
    """Before any work: the shipped model is changed only through a copy (-o), and -o must name a new folder."""
    from deepwml.utils.errors import DeepWMLError

    if args.output is None:
        if args.model == BUILTIN_ALIAS and not getattr(args, "dry_run", False):
            raise DeepWMLError("is the shipped model, inside the DeepWML package and shared by every user of this install: "
                               "give -o NEW_FOLDER for a tuned copy, then predict with -m NEW_FOLDER", folder)
        return
    out = args.output.expanduser()
    if out.exists():
        raise DeepWMLError("-o: already exists; give a new folder for the tuned copy", out)
    if not out.resolve().parent.is_dir():
        raise DeepWMLError("-o: the folder to put the tuned copy in does not exist", out.resolve().parent)


@contextmanager
def model_to_change(args: argparse.Namespace, folder: Path, command: str) -> Iterator[Path]:
    """The PLAN folder to store a result in: the model itself, or with -o a slim copy (its chosen folds and checkpoint,
    weights only, with a manifest) made beside the new folder and renamed to it once stored (removed on failure)."""
    from deepwml.inference.model_loading import check_model
    from deepwml.inference.packaging import install_as_folder

    if args.output is None:
        yield folder
        return
    out = args.output.expanduser().resolve()
    spec = check_model(folder, args.folds, args.checkpoint)
    card_path = folder / "MODEL_CARD.md"
    card = card_path.read_text(encoding="utf-8", errors="replace") if card_path.is_file() else f"# {folder.name}\n"
    card += (f"\n## Tuned copy\nFolds {', '.join(spec.folds)} ({spec.checkpoint} checkpoint) of {folder}, copied and "
             f"changed by `{command}` on {time.strftime('%Y-%m-%d')}: its checkpoints record what was fitted, and on "
             "which scans.\n")
    staging = out.parent / f".{out.name}.{command}-{os.getpid()}"
    try:
        install_as_folder(folder, spec.folds, spec.checkpoint, card, staging)
        yield staging
        os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def store_in_model(args: argparse.Namespace, folder: Path, command: str, store: Callable[[Any], T]) -> Tuple[T, List[str]]:
    """``store`` run on the checked model (or on its -o copy): (what it returned, the folds it stored in)."""
    from deepwml.inference.model_loading import check_model

    with model_to_change(args, folder, command) as target:
        spec = check_model(target, args.folds, args.checkpoint)
        return store(spec), list(spec.folds)


def fitting_device(args: argparse.Namespace) -> Any:
    """--device for fitting on predictions: on a CPU in fp32, the probabilities deepwml_predict's CPU engine (ONNX
    Runtime, fp32) computes, and the same on every CPU (bf16 autocast exists on some only); a GPU as predict uses it."""
    import dataclasses

    from deepwml.training.device import setup_device

    setup = setup_device(args.device)
    return dataclasses.replace(setup, amp_dtype=None) if setup.device.type == "cpu" else setup
