"""What the issue-#14 outputs add to prediction, per 25-slice case: lesion confidence, the uncertainty map and its
file, the per-patient report (pictures + page) and its PDF, beside the existing QC montage and probability file;
and the anatomy model (its preprocessing, network and label map on the input grid) when one is installed or given.

The PDFs come from one headless Chromium per prediction run (deepwml.inference.pdf_printer): the script times a
print by a running browser per case, then whole runs over its cases (a fresh browser each, as deepwml_predict
starts one): their first PDF, browser start included, and the mean per case; and, for comparison, a browser
started for one PDF alone (write_pdf, the cost of a PDF before one browser served the run).

The network does not matter here (all of it runs in the write step, on the input grid), so a toy threshold model
gives the probabilities. Inputs are synthetic MS#1 cases (the first 256x256, the others 512x512) cut to 25 slices. Each figure is the
fastest of --runs repetitions, averaged over the cases.

    python benchmarks/clinical_outputs.py [--cases 3] [--runs 5] [--threads 1] [--anatomy-model PLAN_FOLDER]

With ``--end-to-end K`` it instead times what the outputs add to a whole ``deepwml_predict`` run of K 25-slice
cases with the shipped lesion model (fresh processes, the run's own case workers and thread settings), the
configurations interleaved, median of --runs: --no-anatomy; the default (anatomy map, locations, McDonald,
Fazekas, confidence); + --save-uncertainty --report; + --report pdf. The differences divided by K are what each
adds per case to prediction as a user runs it.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

from deepwml.imageio import Geometry, write_image
from deepwml.inference.anatomy import anatomy_map, anatomy_model_dir, load_anatomy_model
from deepwml.inference.confidence import quantised, uncertainty_map
from deepwml.inference.inputs import InputCase, discover_cases
from deepwml.inference.lesion_report import lesion_table, summarize_case
from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
from deepwml.inference.patient_report import MAX_TABLE_ROWS, ModelInfo, build_patient_report, find_pdf_converter, write_patient_report, write_pdf
from deepwml.inference.pdf_printer import PdfPrinter
from deepwml.inference.pipeline import prepare_case, probabilities_to_mask
from deepwml.inference.predictor import SlicePredictor
from deepwml.inference.qc import write_qc_montage
from deepwml.inference.report_images import report_panels
from deepwml.preprocessing import revert_to_original
from deepwml.synthetic.generate import generate_case
from deepwml.training.device import setup_device
from predict_cpu_fast import predict_command, timed_process, toy_models  # deepwml_testing sits at the repository root, not installed
from machine_load import load_line  # benchmarks/machine_load.py, next to this script


def write_inputs(folder: Path, cases: int, slices: int = 25) -> None:
    """Synthetic MS#1 cases, slices picked by index to exactly ``slices``."""
    for k in range(cases):
        case = generate_case("MS#1", k + 1, seed=0)
        pick = np.linspace(0, case.image.shape[0] - 1, slices).round().astype(int)
        g = case.geometry
        write_image(case.image[pick], Geometry((g.size[0], g.size[1], slices), g.spacing, g.origin, g.direction), folder / f"case{k}.nii.gz")


def main() -> None:
    """Time every output on every case and print the per-case means."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--anatomy-model", type=Path, default=None, help="default: the shipped one, when installed")
    parser.add_argument("--end-to-end", type=int, default=0, metavar="K",
                        help="instead: what the outputs add per case to whole deepwml_predict runs of K cases")
    args = parser.parse_args()
    if args.end_to_end:
        print(load_line())
        end_to_end(args.end_to_end, args.runs)
        return
    torch.set_num_threads(args.threads)
    print(load_line())
    scratch = Path(tempfile.mkdtemp(prefix="deepwml-bench14-"))
    write_inputs(scratch / "in", args.cases)
    spec = check_model(toy_models().write_model_dir(scratch / "model" / "Dataset999_Toy" / "tiny", toy_models().tiny_plan(matrix=256)))
    predictor = SlicePredictor(build_fold_networks(spec, load_fold_states(spec)), spec.plan, setup_device("cpu"))
    model = ModelInfo.describe(spec.folder, spec.plan.name, spec.folds, "best", False, 0.5)
    browser = find_pdf_converter()
    anatomy_dir = anatomy_model_dir(args.anatomy_model)
    anatomy = load_anatomy_model(anatomy_dir, setup_device("cpu")) if anatomy_dir else None
    print(f"anatomy model: {anatomy_dir or 'none'}")
    figures: Dict[str, List[float]] = {}

    def timed(name: str, fn: Callable[[], object], runs: int = args.runs) -> object:
        best, result = float("inf"), None
        for _ in range(runs):
            start = time.perf_counter()
            result = fn()
            best = min(best, time.perf_counter() - start)
        figures.setdefault(name, []).append(best)
        return result

    def timed_once(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def time_case(case: InputCase, out: Path) -> None:
        """Every output of one case, timed (locals, so the timed closures see this case's arrays)."""
        p = prepare_case(case, spec.plan)
        probs = revert_to_original(predictor.predict(p.image_pp, p.head), p.props, order=1)
        mask, g = probabilities_to_mask(probs, 0.5), p.image.geometry
        table = lesion_table(mask, g)
        summary = summarize_case(case.case_id, mask, g, table)
        # the confidence columns are computed by the lesion table from its own components: the cost is the difference
        lesions = timed("confidence columns (always)", lambda: lesion_table(mask, g, probs=probs))
        figures["confidence columns (always)"][-1] -= min(timed_once(lambda: lesion_table(mask, g)) for _ in range(args.runs))
        u = timed("uncertainty map", lambda: uncertainty_map(probs))
        timed("write CASE_uncertainty", lambda: write_image(quantised(u), g, out / "u.nii.gz"))
        panels = timed("report pictures", lambda: report_panels(p.image.array, mask, g, u, numbered=MAX_TABLE_ROWS))
        page = out / f"{case.case_id}.html"
        timed("report page", lambda: write_patient_report(page, build_patient_report(summary, lesions, panels, g, case.source, model, True)))
        if printer is not None:
            printer.print_pdf(page, out / "r.pdf")  # the browser's start is timed with the runs below
            timed("report PDF, browser running (DevTools pipe)", lambda: printer.print_pdf(page, out / "r.pdf"))
            timed("for comparison: report PDF, a browser started for it alone", lambda: write_pdf(page, out / "r.pdf", browser), runs=2)
        timed("for scale: write CASE_prob", lambda: write_image(probs, g, out / "p.nii.gz"))
        timed("for scale: QC montage", lambda: write_qc_montage(p.image.array, mask, g, out / "qc.png", "x"), runs=3)
        if anatomy is not None:
            a_in = timed("anatomy: preprocess (reader thread)", lambda: anatomy.prepare(p.image))
            a_probs = timed("anatomy: network", lambda: anatomy.predict(a_in))
            amap = timed("anatomy: map on the input grid (writer thread)", lambda: anatomy_map(a_probs, a_in.props))
            # what the map adds to the lesion table and summary: location classes, McDonald counts, Fazekas
            located = timed("locations: lesion table with anatomy, minus without", lambda: lesion_table(mask, g, anatomy=amap))
            figures["locations: lesion table with anatomy, minus without"][-1] -= min(
                timed_once(lambda: lesion_table(mask, g)) for _ in range(args.runs))
            timed("locations: summary with McDonald counts and Fazekas", lambda: summarize_case(case.case_id, mask, g, located, anatomy=amap))
        print(f"{case.case_id}: {mask.shape[0]} slices of {mask.shape[1]}x{mask.shape[2]}, {len(lesions)} lesions")

    def time_pdf_runs(pages: List[Path], out: Path) -> None:
        """The PDFs of ``pages`` as one prediction run prints them, ``--runs`` times, each run with a fresh browser."""
        firsts, means = [], []
        for _ in range(args.runs):
            with PdfPrinter(browser) as run_printer:
                times = [timed_once(lambda page=page: run_printer.print_pdf(page, out / "r.pdf")) for page in pages]
            firsts.append(times[0])
            means.append(float(np.mean(times)))
        print(f"report PDF, first of a run (browser start included): {min(firsts):.3f} s (median {np.median(firsts):.3f} s)")
        print(f"report PDF, mean per case over a run of {len(pages)} cases: {min(means):.3f} s (median {np.median(means):.3f} s)")

    cases = discover_cases(scratch / "in")
    printer = PdfPrinter(browser) if browser else None
    try:
        for case in cases:
            time_case(case, scratch / "out")
        if printer is not None:
            printer.close()
            time_pdf_runs([scratch / "out" / f"{c.case_id}.html" for c in cases], scratch / "out")
    finally:
        if printer is not None:
            printer.close()
        shutil.rmtree(scratch, ignore_errors=True)
    for name, values in figures.items():
        print(f"{name}: {np.mean(values):.3f} s per case")
    together = ("confidence columns (always)", "uncertainty map", "write CASE_uncertainty", "report pictures", "report page")
    print(f"--save-uncertainty --report together: {sum(np.mean(figures[k]) for k in together):.3f} s per case")
    if anatomy is not None:
        anatomy_all = sum(np.mean(v) for k, v in figures.items() if k.startswith(("anatomy", "locations")))
        print(f"anatomy model, locations and Fazekas in all: {anatomy_all:.3f} s per case")
        print(f"every issue-#14 output but the PDF: {anatomy_all + sum(np.mean(figures[k]) for k in together):.3f} s per case")


def end_to_end(cases: int, runs: int) -> None:
    """What the outputs add per case to whole deepwml_predict runs of ``cases`` 25-slice cases (see the docstring)."""
    import statistics

    from deepwml.pretrained import builtin_model_dir

    scratch = Path(tempfile.mkdtemp(prefix="deepwml-bench14-e2e-"))
    try:
        write_inputs(scratch / "in", cases)
        configs = {"--no-anatomy": ["--no-anatomy"], "default": [], "default + --save-uncertainty --report": ["--save-uncertainty", "--report"]}
        if find_pdf_converter():
            configs["default + --save-uncertainty --report pdf"] = ["--save-uncertainty", "--report", "pdf"]
        walls: Dict[str, List[float]] = {name: [] for name in configs}
        for _ in range(runs):
            for name, extra in configs.items():  # interleaved, so drifting load hits every configuration alike
                walls[name].append(timed_process(predict_command(scratch / "in", scratch / "out", builtin_model_dir(), extra))[0])
        base = statistics.median(walls["--no-anatomy"])
        print(f"deepwml_predict on {cases} cases of 25 slices (the first 256x256, the others 512x512), shipped lesion model, "
              f"whole process, median of {runs}:")
        for name, values in walls.items():
            wall = statistics.median(values)
            print(f"  {name:44s} {wall:6.1f} s ({min(values):.1f}-{max(values):.1f}); adds {(wall - base) / cases:+.2f} s per case")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
