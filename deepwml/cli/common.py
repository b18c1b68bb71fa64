"""What every command shares: user errors as one line without a traceback, exit codes, device flag."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional

from deepwml.constants import MAX_CORTEX_CONTRAST, MIN_CORTEX_CONTRAST
from deepwml.utils.errors import DeepWMLError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
#: as a shell reports a command killed by SIGPIPE
EXIT_BROKEN_PIPE = 141


def run(main_fn: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None) -> int:
    """Call ``main_fn`` and turn user errors into one clear line and a non-zero exit code."""
    try:
        return int(main_fn(argv) or 0)
    except DeepWMLError as e:
        print(f"{_prog()}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{_prog()}: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of stdout went away (`... | head`): every file is already written; no traceback, and none at exit
        import os

        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # stdout is no file (captured in-process): nothing flushes to a pipe
            pass
        return EXIT_BROKEN_PIPE


def report_native_crashes() -> None:
    """Should native code (torch, oneDNN, ITK) crash the process, print every thread's Python stack to stderr first,
    so that a user has more to report than an exit code and an empty terminal."""
    import faulthandler

    if not faulthandler.is_enabled():
        faulthandler.enable()


def exit_without_teardown(code: int) -> None:
    """End the process with ``code`` once stdout, stderr and logging are flushed, skipping the interpreter's teardown.

    After a prediction run that teardown (torch's and oneDNN's caches, thousands of modules) took ~0.8 s of a 9 s
    run, 1.1 s after a short deepwml_train and 0.7 s after deepwml_calibrate (benchmarks/command_exit.py), and does
    nothing a user needs: every output is already written atomically and closed, the worker threads have been joined,
    and the worker processes are stopped here (:func:`stop_worker_processes`). Only the installed commands (and
    ``python -m deepwml.cli.X``) end this way; main() returns to in-process callers.
    """
    import logging
    import os

    stop_worker_processes()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to say
            pass
    os._exit(code)


def stop_worker_processes() -> None:
    """What the interpreter's exit does for worker processes and os._exit would skip: joblib's reusable pool of
    workers (kept alive for the next Parallel call) shut down, daemonic multiprocessing children terminated, and every
    child waited for, so that none outlives the command."""
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)  # the pool joblib's Parallel made, if it made one
    if executor is not None:
        executor.shutdown(wait=True)
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None:
        for child in multiprocessing.active_children():
            if child.daemon:
                child.terminate()
            child.join()


def run_installed(main_fn: Callable[[], int], tuned_allocator: bool = False) -> None:
    """An installed command that runs torch: native crashes print the Python stacks, and the process ends with
    ``main_fn()``'s exit code without the interpreter's teardown (:func:`exit_without_teardown`). ``tuned_allocator``:
    first re-execute with big freed arrays kept mapped (deepwml.utils.allocator; a process that ends after its batch)."""
    if tuned_allocator:
        from deepwml.utils.allocator import reexec_with_tuned_allocator

        reexec_with_tuned_allocator()
    report_native_crashes()
    exit_without_teardown(main_fn())


def _prog() -> str:
    import os

    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "deepwml"


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    """--version: the command and DeepWML's version (what a report or a DICOM object it wrote names), at once."""
    import deepwml

    parser.add_argument("--version", action="version", version=f"%(prog)s (DeepWML {deepwml.__version__})",
                        help="print DeepWML's version and exit")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """--device auto|cpu|cuda[:N]."""
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N (default: auto)",
    )


def add_dataset_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """-d DATASET by id (501) or name (Dataset501_Synth)."""
    parser.add_argument(
        "-d", "--dataset", required=required, help="dataset id (e.g. 501) or folder name (e.g. Dataset501_Synth)"
    )


def add_tta_options(parser) -> None:
    """--tta / --no-tta (``args.tta``: True, False, or None for the model's own choice)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--tta", dest="tta", action="store_const", const=True, default=None,
                       help="also predict the left-right mirrored slices and average (about 2x the network's time; "
                       "default: as the model's postprocessing says, on for the shipped model)")
    group.add_argument("--no-tta", dest="tta", action="store_const", const=False,
                       help="predict each slice once, without its mirror image, even when the model's postprocessing "
                       "asks for TTA (faster; masks as the model's settings were not chosen for)")


SKULL_STRIP_HELP = ("segment only the brain the anatomy model finds (everything outside it set to 0 first), so a scan with "
                   "its skull and the same scan skull-stripped get the same lesions: the default when there is an anatomy "
                   "model and the lesion model learned skull-stripped scans (the shipped one did); asked for, it applies "
                   "to any lesion model, and a scan in which the anatomy model finds no brain fails")
NO_SKULL_STRIP_HELP = ("show the lesion model the whole scan as given, skull and scalp included (the behaviour before "
                       "2026-12-07): its lesions then move with what lies around the brain (the same synthetic brains "
                       "with and without skull: lesion volume ratio IQR 0.86-1.08, against 1.00-1.01 stripped)")


def add_skull_strip_options(parser, strip_help: str = SKULL_STRIP_HELP, no_strip_help: str = NO_SKULL_STRIP_HELP) -> None:
    """--skull-strip / --no-skull-strip (``args.skull_strip``: True, False, or None for the default: on with an
    anatomy model for a lesion model that learned skull-stripped scans; deepwml.inference.skull_strip.run_skull_strip)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--skull-strip", dest="skull_strip", action="store_const", const=True, default=None, help=strip_help)
    group.add_argument("--no-skull-strip", dest="skull_strip", action="store_const", const=False, help=no_strip_help)


def thin_slab_setting(text: str) -> Optional[float]:
    """--thin-slab-mm as argparse reads it: None for 'auto', else a width in mm (0: off)."""
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto', 0 or a slab width in mm, not {text!r}") from None
    if not 0 <= value < float("inf"):  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected 'auto', 0 or a slab width in mm, not {text!r}")
    return value


def cortex_contrast_setting(text: str) -> float:
    """--min-cortex-contrast as argparse reads it: 0 (off) or a bound from 1 to MAX_CORTEX_CONTRAST."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value == 0 or 1.0 <= value <= MAX_CORTEX_CONTRAST):  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected 0 (off) or a bound from 1 to {MAX_CORTEX_CONTRAST:g}, not {text!r}")
    return value


#: --thin-slab-mm's help, shared by the commands that predict
THIN_SLAB_HELP = ("each slice of a scan whose slices are thinner than this (e.g. a 1 mm 3D FLAIR) reaches the networks "
                  "averaged over a slab this many mm thick centred on it, as a thick 2D slice records the tissue; the "
                  "masks stay on the scan's own slices. 'auto' (default): half the model's thinnest training slices "
                  "(2 mm for the shipped model); 0: every scan as given")


def add_mask_options(parser) -> None:
    """The options that decide a mask besides the model, as the commands built on deepwml_predict take them."""
    add_tta_options(parser)
    parser.add_argument("--threshold", type=float, default=None, help="lesion probability threshold (default: the model's)")
    parser.add_argument("--min-lesion-ml", type=float, default=None, metavar="ML",
                        help="drop lesions smaller than this (default: the model's postprocessing, else 0)")
    parser.add_argument("--min-lesion-peak", type=float, default=None, metavar="P",
                        help="drop lesions whose most probable voxel stays under P (default: the model's postprocessing, else 0)")
    parser.add_argument("--min-lesion-contrast", type=float, default=None, metavar="C",
                        help="drop lesions less than C times as bright as the tissue around them, e.g. 1.15 (default: the "
                        "model's postprocessing, else 0)")
    parser.add_argument("--min-lesion-spread", type=float, default=None, metavar="S",
                        help="with --min-lesion-contrast: drop a faint lesion only when also under S ring spreads above "
                        "the tissue around it, e.g. 2.25 (default: the model's postprocessing, else 0: the ratio alone)")
    parser.add_argument("--no-postprocessing", action="store_true",
                        help="ignore the TTA, threshold and lesion filters stored in the model (deepwml_find_postprocessing)")
    parser.add_argument("--white-matter-only", action="store_true", help="drop lesions the anatomy map places in the cortex")
    add_skull_strip_options(parser)
    parser.add_argument("--keep-outside-brain", action="store_true",
                        help="keep the lesions with no voxel in the anatomy model's brain (dropped by default)")
    parser.add_argument("--min-cortex-contrast", type=cortex_contrast_setting, default=MIN_CORTEX_CONTRAST, metavar="K",
                        help="drop the lesions the anatomy map places in or against the cortex (cortical, juxtacortical) under K times the cortex's median "
                        "intensity (default %(default)g; 0 keeps them)")
    parser.add_argument("--no-anatomy", action="store_true", help="no anatomy map (and so no lesion locations or Fazekas estimate)")
    parser.add_argument("--thin-slab-mm", type=thin_slab_setting, default=None, metavar="auto|0|MM", help=THIN_SLAB_HELP)
