"""deepwml_compare: rigid registration of two visits, lesion change (new, enlarging, stable, shrinking, resolved),
its outputs and its refusals."""
from __future__ import annotations

import gzip
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from deepwml.cli.compare import main as compare_main
from deepwml.imageio import Geometry, read_image, read_label, write_image
from deepwml.inference.lesion_report import lesion_table
from deepwml.longitudinal.change import (
    CHANGE_CODES, ENLARGING, NEW, PERSISTING, RESOLVED, SHRINKING, STABLE, UNSEEN, AlignedImages, ChangeRules,
    NEW_NOT_COUNTED, LesionSet, compare_lesions, findings_text,
)
from deepwml.longitudinal.registration import RigidTransform, register_rigid, to_sitk
from deepwml.synthetic.thick_slices import SlabSpec, thick_slice_stack
from deepwml.utils.errors import DeepWMLError

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
GRID = Geometry((64, 64, 10), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0), AXIAL)  # x, y, z


def box(mask: np.ndarray, z: slice, y: slice, x: slice) -> np.ndarray:
    """``mask`` with a box of lesion added (numpy z, y, x)."""
    out = mask.copy()
    out[z, y, x] = True
    return out


def empty() -> np.ndarray:
    return np.zeros(GRID.size[::-1], bool)


def visits():
    """Baseline: A (big), B (small), C; follow-up: A unchanged, B grown threefold, C gone, D new (6 mm), E new (2 mm)."""
    a = (slice(2, 4), slice(10, 20), slice(10, 20))
    base = box(box(box(empty(), *a), slice(5, 6), slice(40, 44), slice(40, 44)), slice(7, 8), slice(10, 14), slice(40, 44))
    follow = box(box(empty(), *a), slice(5, 6), slice(38, 46), slice(38, 44))          # B: 16 -> 48 voxels
    follow = box(follow, slice(5, 6), slice(10, 16), slice(50, 56))                    # D: 6 x 6 mm
    follow = box(follow, slice(8, 9), slice(50, 52), slice(10, 12))                    # E: 2 x 2 mm
    return base, follow


def status_of(table, mask: np.ndarray, labels: np.ndarray) -> str:
    """The status of the follow-up lesion covering ``mask``."""
    ids = np.unique(labels[mask])
    assert len(ids) == 1 and ids[0] > 0
    return table.set_index("lesion_id").loc[int(ids[0]), "status"]


def test_new_enlarging_stable_and_resolved_lesions_on_one_grid():
    base, follow = visits()
    change = compare_lesions(base, GRID, follow, GRID, RigidTransform.identity())
    labels = LesionSet.from_mask(follow, GRID).labels
    t = change.followup
    assert status_of(t, box(empty(), slice(2, 3), slice(12, 13), slice(12, 13)), labels) == STABLE
    assert status_of(t, box(empty(), slice(5, 6), slice(40, 41), slice(40, 41)), labels) == ENLARGING
    assert status_of(t, box(empty(), slice(5, 6), slice(12, 13), slice(52, 53)), labels) == NEW
    assert status_of(t, box(empty(), slice(8, 9), slice(50, 51), slice(10, 11)), labels) == NEW
    # the 2 mm lesion is listed as new but does not count (MAGNIMS: 3 mm long axis)
    counted = t.set_index("status").loc[NEW, "counted"].tolist()
    assert sorted(counted) == [False, True]
    assert list(change.baseline["status"]) == [PERSISTING, PERSISTING, RESOLVED]
    s = change.summary
    assert (s["new_lesions"], s["new_lesions_not_counted"], s["enlarging_lesions"], s["stable_lesions"],
            s["resolved_baseline_lesions"], s["new_or_enlarging_lesions"]) == (1, 1, 1, 1, 1, 2)
    assert s["baseline_volume_ml"] == pytest.approx((200 + 16 + 16) * 5e-3)
    assert s["followup_volume_ml"] == pytest.approx((200 + 48 + 36 + 4) * 5e-3)
    # the change map on the follow-up's grid carries each lesion's status code
    assert set(np.unique(change.change_map)) == {0, CHANGE_CODES[STABLE], CHANGE_CODES[ENLARGING], CHANGE_CODES[NEW],
                                                 CHANGE_CODES[NEW_NOT_COUNTED]}
    assert change.change_map[5, 12, 52] == CHANGE_CODES[NEW]
    assert change.change_map[8, 50, 10] == CHANGE_CODES[NEW_NOT_COUNTED]


def test_shrinking_and_the_enlarging_thresholds():
    base, follow = visits()
    # B shrinks back: baseline 48 voxels, follow-up 16
    change = compare_lesions(follow, GRID, base, GRID, RigidTransform.identity())
    assert SHRINKING in set(change.followup["status"])
    # growth by 200 % but under the minimum volume: stable
    change = compare_lesions(base, GRID, follow, GRID, RigidTransform.identity(), ChangeRules(enlarge_min_ml=1.0))
    assert ENLARGING not in set(change.followup["status"])
    # growth by 200 % is not enough when 250 % is asked
    change = compare_lesions(base, GRID, follow, GRID, RigidTransform.identity(), ChangeRules(enlarge_fraction=2.5))
    assert ENLARGING not in set(change.followup["status"])


def test_lesion_ids_are_those_of_deepwml_predicts_lesion_table():
    _, follow = visits()
    lesions = LesionSet.from_mask(follow, GRID)
    table = lesion_table(follow, GRID)
    assert list(table["voxels"]) == list(np.bincount(lesions.labels.ravel())[1:])
    assert np.allclose(table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(), lesions.centroid_mm)


def test_lesions_match_in_millimetres_across_grids_and_tolerance():
    """A follow-up with 6 mm slices starting 2 mm higher and pixels of 0.8 mm: the same lesion is stable; a lesion 5.4 mm
    beside a baseline lesion is new at the default tolerance and the same lesion at 6 mm."""
    base = box(empty(), slice(4, 6), slice(20, 30), slice(20, 30))    # z 20-30 mm, y/x 20-30 mm
    follow_grid = Geometry((80, 80, 8), (0.8, 0.8, 6.0), (0.0, 0.0, 2.0), AXIAL)
    follow = np.zeros(follow_grid.size[::-1], bool)
    follow[3:5, 26:37, 26:37] = True                                    # z 20-26 mm, y/x 20.8-28.8 mm
    follow[3, 26:37, 43:48] = True                                      # x 34.4-37.6 mm: voxel centres 5.4 mm from the baseline lesion's
    change = compare_lesions(base, GRID, follow, follow_grid, RigidTransform.identity())
    assert sorted(change.followup["status"]) == [NEW, STABLE]
    wide = compare_lesions(base, GRID, follow, follow_grid, RigidTransform.identity(), ChangeRules(tolerance_mm=6.0))
    assert set(wide.followup["status"]) <= {STABLE, ENLARGING}
    # moved by a known transform: the same lesion placed 20 mm further along x in the follow-up's world is matched
    shifted = np.zeros_like(follow)
    shifted[3:5, 26:37, 51:62] = True                                   # x 40.8-48.8 mm
    moved = RigidTransform(np.eye(3), np.array([-20.0, 0.0, 0.0]))      # follow-up point - 20 mm x = baseline point
    assert list(compare_lesions(base, GRID, shifted, follow_grid, moved).followup["status"]) == [STABLE]
    assert list(compare_lesions(base, GRID, shifted, follow_grid, RigidTransform.identity()).followup["status"]) == [NEW]


def aligned_images(base_image: np.ndarray, follow_image: np.ndarray, base_mask: np.ndarray, covered=None) -> AlignedImages:
    return AlignedImages(follow_image, base_image, np.ones(base_image.shape, bool) if covered is None else covered,
                         base_mask)


def test_a_new_lesion_must_be_brighter_than_the_baseline_was_there():
    base, follow = visits()
    rng = np.random.default_rng(0)
    base_image = 100 + rng.normal(0, 2, base.shape).astype(np.float32) + 40 * base
    follow_image = 100 + rng.normal(0, 2, base.shape).astype(np.float32) + 40 * follow
    change = compare_lesions(base, GRID, follow, GRID, RigidTransform.identity(), images=aligned_images(base_image, follow_image, base))
    assert change.summary["new_lesions"] == 1 and change.summary["enlarging_lesions"] == 1
    new_row = change.followup[(change.followup["status"] == NEW) & change.followup["counted"]]
    assert new_row["signal_change"].iloc[0] == pytest.approx(0.4, abs=0.05)
    # the baseline already showed D and B's rim as bright (unlabelled): D is no new lesion, B did not grow
    brighter_before = base_image + 40 * follow
    change = compare_lesions(base, GRID, follow, GRID, RigidTransform.identity(),
                             images=aligned_images(brighter_before, follow_image, base))
    assert change.summary["new_lesions"] == 0 and change.summary["new_lesions_not_counted"] == 2
    assert change.summary["enlarging_lesions"] == 0
    # D outside the slabs the baseline covered: nothing can be said of its past
    covered = np.ones(base.shape, bool)
    covered[5] = False
    change = compare_lesions(base, GRID, follow, GRID, RigidTransform.identity(),
                             images=aligned_images(base_image, follow_image, base, covered))
    assert UNSEEN in set(change.followup["status"]) and change.summary["outside_baseline_lesions"] == 1


def test_no_lesions_on_either_visit():
    change = compare_lesions(empty(), GRID, empty(), GRID, RigidTransform.identity())
    assert len(change.followup) == 0 and len(change.baseline) == 0
    assert change.summary["volume_change_percent"] is None and change.summary["new_lesions"] == 0


@pytest.mark.parametrize("rules, option", [(ChangeRules(tolerance_mm=-1), "--tolerance-mm"),
                                           (ChangeRules(enlarge_fraction=0), "--enlarge-fraction"),
                                           (ChangeRules(enlarge_min_ml=-0.1), "--enlarge-min-ml"),
                                           (ChangeRules(new_min_long_axis_mm=float("nan")), "--new-min-long-axis-mm"),
                                           (ChangeRules(min_signal_change=float("inf")), "--min-signal-change")])
def test_rules_that_make_no_sense_are_refused(rules, option):
    with pytest.raises(DeepWMLError, match=option):
        rules.check()


def phantom_head(seed: int = 0):
    """A 1.5 mm head: skull rim, brain with a smooth texture (folds stand-in: a bare ellipsoid leaves rotations about
    its axes loosely fixed), two unequal ventricles, a bright nucleus off the midline, lesions; image, mask."""
    shape = (90, 110, 100)  # z, y, x
    z, y, x = np.meshgrid(*[(np.arange(n) - n / 2) * 1.5 for n in shape], indexing="ij")
    head = (x / 68) ** 2 + (y / 80) ** 2 + ((z + 5) / 62) ** 2 < 1
    brain = (x / 62) ** 2 + (y / 74) ** 2 + ((z + 5) / 56) ** 2 < 1
    image = np.where(head, 160.0, 0.0) + np.where(brain, -60.0, 0.0)
    image -= 80 * (((x + 9) / 6) ** 2 + ((y + 8) / 25) ** 2 + ((z - 8) / 14) ** 2 < 1)
    image -= 80 * (((x - 10) / 5) ** 2 + ((y + 4) / 20) ** 2 + ((z - 5) / 12) ** 2 < 1)
    image += 40 * (((x + 25) / 8) ** 2 + ((y - 20) / 10) ** 2 + ((z + 20) / 9) ** 2 < 1)
    lesions = np.zeros(shape, bool)
    for c in ((20, 30, 15), (-30, -20, 25), (15, -40, -5)):
        lesions |= ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) < 5**2
    rng = np.random.default_rng(seed)
    image += 320 * ndimage.gaussian_filter(rng.normal(size=shape), 3) * brain
    image = image + 50 * lesions + rng.normal(0, 3, shape)
    geometry = Geometry(shape[::-1], (1.5, 1.5, 1.5), (-75.0, -82.5, -67.5), AXIAL)
    return image.astype(np.float32), lesions, geometry


def moved_visit(image: np.ndarray, mask: np.ndarray, geometry: Geometry, degrees=(5.0, -3.0, 4.0), shift=(4.0, -5.0, 3.0)):
    """The head as a later visit sees it: follow-up world point p shows the baseline's point A(p); returns image,
    mask and A."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter((0.0, 0.0, 0.0))
    transform.SetRotation(*np.deg2rad(degrees))
    transform.SetTranslation(shift)
    reference = to_sitk(image, geometry)

    def resample(a):
        return sitk.GetArrayFromImage(sitk.Resample(to_sitk(a, geometry), reference, transform, sitk.sitkLinear, 0.0))

    return resample(image), resample(mask.astype(np.float32)) >= 0.5, transform


def two_visits(tmp_path: Path, new_lesion: bool = True):
    """Baseline (5 mm slabs) and a moved follow-up (6 mm slabs, one more lesion) written as NIfTI with their masks."""
    image, mask, geometry = phantom_head()
    follow_image, follow_mask = image.copy(), mask.copy()
    if new_lesion:
        z, y, x = np.meshgrid(*[(np.arange(n) - n / 2) * 1.5 for n in image.shape], indexing="ij")
        # at a point of benchmarks/phantom_sweep.py's grid that the model shipped since 2026-12-05 and the one before
        # it find on every seed, so that the model-based tests count this lesion with either (at x 30, y -35, z 20 the
        # newer model's calibrated probability stayed at 0.43; at x -30, y 35 the older one's under 0.01)
        blob = ((x - 18) ** 2 + (y + 36) ** 2 + (z - 18) ** 2) < 6**2
        follow_image, follow_mask = follow_image + 50 * blob, follow_mask | blob
    follow_image, follow_mask, transform = moved_visit(follow_image, follow_mask, geometry)
    base = thick_slice_stack(image, mask.astype(np.uint8), geometry, SlabSpec(5.0))
    follow = thick_slice_stack(follow_image, follow_mask.astype(np.uint8), geometry, SlabSpec(6.0))
    paths = {}
    for name, stack in (("baseline", base), ("followup", follow)):
        paths[name] = write_image(stack.image, stack.geometry, tmp_path / f"{name}.nii.gz")
        paths[f"{name}_mask"] = write_image(stack.label, stack.geometry, tmp_path / f"{name}_mask.nii.gz")
    return paths, base, follow, transform


def test_registration_recovers_a_moved_head_across_slice_thicknesses(tmp_path):
    _, base, follow, truth = two_visits(tmp_path, new_lesion=False)
    registration = register_rigid(follow.image, follow.geometry, base.image, base.geometry)
    head = np.argwhere(follow.image > 50)[::40][:, ::-1].astype(float)
    points = follow.geometry.index_to_world(head)
    expected = np.array([truth.TransformPoint(p) for p in points])
    error = np.linalg.norm(registration.transform.followup_to_baseline(points) - expected, axis=1)
    assert np.median(error) < 0.6 and error.max() < 1.2
    assert registration.correlation > 0.9 and not registration.doubtful
    # and back: baseline_to_followup inverts it
    assert np.allclose(registration.transform.baseline_to_followup(registration.transform.followup_to_baseline(points)), points)
    # runs repeat (a seed of 0 once let SimpleITK draw the metric's sample from the clock: tenths of a mm apart);
    # two threads may still sum in another order, in the last bits
    again = register_rigid(follow.image, follow.geometry, base.image, base.geometry)
    assert np.allclose(again.transform.matrix, registration.transform.matrix, atol=1e-6)
    assert np.allclose(again.transform.translation, registration.transform.translation, atol=1e-4)


def test_an_oblique_follow_up_stack_is_compared_in_world_coordinates(tmp_path):
    """Clinical stacks are tilted along the AC-PC line: the follow-up written with slices tilted by 15 degrees (its
    world positions turn with them) finds the same one new lesion."""
    from conftest import oblique_direction

    paths, base, follow, _ = two_visits(tmp_path)
    tilted = Geometry(follow.geometry.size, follow.geometry.spacing, follow.geometry.origin, oblique_direction(15.0))
    write_image(follow.image, tilted, paths["followup"])
    write_image(follow.label, tilted, paths["followup_mask"])
    out = tmp_path / "out"
    assert compare_main(["-b", str(paths["baseline"]), "-f", str(paths["followup"]), "-o", str(out), "--no-picture",
                         "--baseline-mask", str(paths["baseline_mask"]), "--followup-mask", str(paths["followup_mask"])]) == 0
    summary = json.loads((out / "change.json").read_text())
    assert (summary["new_lesions"], summary["enlarging_lesions"], summary["resolved_baseline_lesions"]) == (1, 0, 0)
    assert summary["registration"]["correlation"] > 0.9 and summary["registration"]["rotation_deg"] > 10
    assert not read_label(out / "change.nii.gz").geometry.mismatches(tilted)


def test_command_writes_every_output_for_given_masks(tmp_path, capsys):
    paths, _, follow, _ = two_visits(tmp_path)
    out = tmp_path / "out"
    code = compare_main(["-b", str(paths["baseline"]), "-f", str(paths["followup"]), "-o", str(out),
                         "--baseline-mask", str(paths["baseline_mask"]), "--followup-mask", str(paths["followup_mask"])])
    assert code == 0
    printed = capsys.readouterr().out
    assert "1 new lesion(s)" in printed
    summary = json.loads((out / "change.json").read_text())
    assert summary["new_lesions"] == 1 and summary["enlarging_lesions"] == 0 and summary["resolved_baseline_lesions"] == 0
    assert summary["rules"] == {"tolerance_mm": 1.5, "enlarge_fraction": 0.5, "enlarge_min_ml": 0.03,
                                "new_min_long_axis_mm": 3.0, "min_signal_change": 0.1}
    assert summary["registration"]["correlation"] > 0.9 and not summary["registration"]["doubtful"]
    # 5 mm against 6 mm slabs: the counts partly reflect the protocol, and the run says so
    assert len(summary["warnings"]) == 1 and "slice thickness differs (5 mm baseline, 6 mm follow-up)" in summary["warnings"][0]
    assert "warning: slice thickness differs" in printed
    change_map = read_label(out / "change.nii.gz")
    assert not change_map.geometry.mismatches(follow.geometry)
    assert (change_map.array == CHANGE_CODES[NEW]).any() and (change_map.array == CHANGE_CODES[STABLE]).any()
    aligned = read_image(out / "baseline_on_followup.nii.gz")
    assert not aligned.geometry.mismatches(follow.geometry)
    for name in ("followup_lesions_change.csv", "baseline_lesions_change.csv", "baseline_mask_on_followup.nii.gz", "change.png"):
        assert (out / name).is_file()
    # the reader's page: self-contained (the picture inlined, nothing fetched), the findings and the new lesion on it
    page = (out / "change.html").read_text()
    assert html.escape(summary["findings"]) in page and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "New and enlarging lesions" in page and ">new<" in page
    table = pd.read_csv(out / "followup_lesions_change.csv")
    assert {"lesion_id", "status", "counted", "volume_ml", "long_axis_mm", "signal_change", "baseline_lesion_ids"} <= set(table.columns)
    assert not list(out.glob("*.tmp*")) and [p.name for p in out.glob(".*")] == [".deepwml_compare.json"]


def test_a_follow_up_stored_with_an_offset_or_z_scored_shows_the_same_change(tmp_path, capsys):
    """The signal change divides each visit by its brain median, so it reads intensities from no signal: a follow-up
    exported with an offset, or z-scored, gives the new lesion the signal change of the follow-up as stored."""
    paths, _, follow, _ = two_visits(tmp_path)
    changes = {}
    for name, change in (("as_stored", lambda a: a), ("offset", lambda a: a + 3 * a.max()),
                         ("z_scored", lambda a: (a - a.mean()) / a.std())):
        followup = write_image(change(follow.image.astype(np.float64)).astype(np.float32), follow.geometry,
                               tmp_path / name / "followup.nii.gz")
        assert compare_main(["-b", str(paths["baseline"]), "-f", str(followup), "-o", str(tmp_path / name / "out"),
                             "--baseline-mask", str(paths["baseline_mask"]), "--followup-mask",
                             str(paths["followup_mask"])]) == 0
        assert json.loads((tmp_path / name / "out" / "change.json").read_text())["new_lesions"] == 1
        table = pd.read_csv(tmp_path / name / "out" / "followup_lesions_change.csv")
        changes[name] = table.set_index("lesion_id")["signal_change"]
    capsys.readouterr()
    assert changes["as_stored"].max() > 0.2
    for name in ("offset", "z_scored"):
        assert np.allclose(changes[name], changes["as_stored"], atol=0.02), (name, changes[name], changes["as_stored"])


def test_command_segments_both_visits_with_the_shipped_model_reuses_them_and_guards_them(tmp_path, capsys):
    paths, _, _, _ = two_visits(tmp_path)
    out = tmp_path / "out"
    args = ["-b", str(paths["baseline"]), "-f", str(paths["followup"]), "-o", str(out), "--no-picture"]
    assert compare_main(args) == 0
    assert "shipped with DeepWML" in capsys.readouterr().err
    masks = [out / "baseline" / "baseline.nii.gz", out / "followup" / "followup.nii.gz"]
    assert all(m.is_file() for m in masks) and not (out / "change.png").exists()
    summary = json.loads((out / "change.json").read_text())
    assert summary["inputs"]["baseline_mask"] == str(masks[0])
    # each follow-up lesion's location class comes from deepwml_predict's lesion table, row for row
    change_table = pd.read_csv(out / "followup_lesions_change.csv")
    predicted = pd.read_csv(out / "followup" / "followup_lesions.csv")
    assert list(change_table["location"]) == list(predicted["location"])
    assert np.allclose(change_table["volume_ml"], predicted["volume_ml"], atol=1e-5)
    # each visit's split by the 10 mm rule, as its own summary.csv gives it
    for visit in ("baseline", "followup"):
        row = pd.read_csv(out / visit / "summary.csv").iloc[0]
        for side in ("within", "beyond"):
            column = f"volume_{side}_10mm_of_ventricles_ml"
            assert summary[f"{visit}_{column}"] == pytest.approx(row[column], abs=1e-4)
    # and each visit's brain on its scanned slices, as its summary.csv gives it
    for visit in ("baseline", "followup"):
        row = pd.read_csv(out / visit / "summary.csv").iloc[0]
        assert summary[f"{visit}_brain_volume_ml"] == pytest.approx(row["brain_volume_ml"], abs=0.05)
    stamps = [m.stat().st_mtime_ns for m in masks]
    assert compare_main(args) == 0  # a second run finds the segmentations done
    assert [m.stat().st_mtime_ns for m in masks] == stamps
    # another scan of the same name into this folder would be given the old segmentation: refused...
    other = tmp_path / "other"
    other.mkdir()
    (other / "baseline.nii.gz").write_bytes(paths["baseline"].read_bytes())
    swapped = ["-b", str(other / "baseline.nii.gz")] + args[2:]
    capsys.readouterr()
    assert compare_main(swapped) == 2
    assert "holds the segmentations of other scans" in capsys.readouterr().err
    # ... unless --overwrite, which segments both anew
    assert compare_main(swapped + ["--overwrite"]) == 0
    assert json.loads((out / "change.json").read_text())["inputs"]["baseline"] == str(other / "baseline.nii.gz")
    assert masks[0].stat().st_mtime_ns != stamps[0]
    # given masks reuse nothing: any folder will do
    given = ["--baseline-mask", str(paths["baseline_mask"]), "--followup-mask", str(paths["followup_mask"])]
    assert compare_main(args + given) == 0


def _corrupt(path: Path) -> None:
    path.write_bytes(gzip.compress(b"not a nifti"))


@pytest.mark.parametrize("problem, message", [
    ("model and masks", "nothing is segmented"),
    ("mask grid", "mask is not on its scan's grid"),
    ("corrupt", "unreadable"),
    ("nan", "NaN"),
    ("4d", "4D"),
    ("same file", "same file"),
    ("missing", "not found"),
    ("output is a file", "not a folder"),
    ("tolerance", "--tolerance-mm"),
    ("signal", "--min-signal-change"),
])
def test_user_errors_are_one_line_naming_the_file(tmp_path, capsys, problem, message):
    paths, base, _, _ = two_visits(tmp_path, new_lesion=False)
    out = tmp_path / "out"
    args = ["-b", str(paths["baseline"]), "-f", str(paths["followup"]), "-o", str(out),
            "--baseline-mask", str(paths["baseline_mask"]), "--followup-mask", str(paths["followup_mask"])]
    named = None
    if problem == "model and masks":
        args += ["-m", str(tmp_path)]
    elif problem == "mask grid":
        named = paths["followup_mask"]
        write_image(np.zeros(base.label.shape, np.uint8), base.geometry, named)
    elif problem == "corrupt":
        named = paths["baseline"]
        _corrupt(named)
    elif problem == "nan":
        named = paths["followup"]
        write_image(np.full(base.image.shape, np.nan, np.float32), base.geometry, named)
        write_image(base.label, base.geometry, paths["followup_mask"])
    elif problem == "4d":
        named = tmp_path / "four_d.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 8, 8), np.float32), isVector=False), str(named))
        args[1] = str(named)
    elif problem == "same file":
        args[3] = args[1]
    elif problem == "missing":
        named = tmp_path / "nowhere.nii.gz"
        args[3] = str(named)
    elif problem == "output is a file":
        out.write_text("x")
    elif problem == "tolerance":
        args += ["--tolerance-mm", "-2"]
    elif problem == "signal":
        args += ["--min-signal-change", "nan"]
    assert compare_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    if named is not None:
        assert str(named) in err[0]
    assert not (out / "change.json").exists()


def test_an_alignment_that_fails_is_reported_as_doubtful(tmp_path, capsys):
    """A 'follow-up' that is another image altogether (shuffled voxels): the run finishes and warns."""
    paths, _, follow, _ = two_visits(tmp_path, new_lesion=False)
    shuffled = np.random.default_rng(0).permutation(follow.image.ravel()).reshape(follow.image.shape)
    write_image(shuffled, follow.geometry, paths["followup"])
    out = tmp_path / "out"
    assert compare_main(["-b", str(paths["baseline"]), "-f", str(paths["followup"]), "-o", str(out), "--no-picture",
                         "--baseline-mask", str(paths["baseline_mask"]), "--followup-mask", str(paths["followup_mask"])]) == 0
    summary = json.loads((out / "change.json").read_text())
    assert summary["registration"]["doubtful"]
    assert any("agree poorly" in w for w in summary["warnings"])
    assert "warning: the aligned scans agree poorly" in capsys.readouterr().out


def test_findings_sentence():
    base, follow = visits()
    summary = compare_lesions(base, GRID, follow, GRID, RigidTransform.identity()).summary
    assert findings_text(summary) == ("Compared with the baseline: 1 new lesion (3 mm or more) and 1 enlarging lesion; "
                                      "lesion volume 1.16 ml -> 1.44 ml (+24.1 %); 1 baseline lesion no longer seen.")
    summary["new_lesion_locations"] = {"periventricular": 1}
    assert findings_text(summary).startswith("Compared with the baseline: 1 new lesion (3 mm or more, 1 periventricular) and")
    # both visits' split by the 10 mm rule follows the volumes (half of it, a reader's mask on one side, says nothing)
    summary.update(baseline_volume_within_10mm_of_ventricles_ml=0.8, followup_volume_within_10mm_of_ventricles_ml=1.0)
    assert "within 10 mm" not in findings_text(summary)
    summary.update(baseline_volume_beyond_10mm_of_ventricles_ml=0.36, followup_volume_beyond_10mm_of_ventricles_ml=0.444)
    assert ("lesion volume 1.16 ml -> 1.44 ml (+24.1 %) (within 10 mm of the ventricles 0.80 -> 1.00 ml, beyond 0.36 -> "
            "0.44 ml); 1 baseline lesion no longer seen.") in findings_text(summary)
    quiet = compare_lesions(base, GRID, base, GRID, RigidTransform.identity()).summary
    assert findings_text(quiet) == "Compared with the baseline: no new or enlarging lesion; lesion volume 1.16 ml -> 1.16 ml (+0.0 %)."


def test_dicom_series_are_segmented_compared_and_the_change_goes_back_as_a_dicom_seg(tmp_path, capsys):
    """Both visits as DICOM series: segmented with the shipped model; with --dicom-seg the change map comes back as
    a SEG of the follow-up series, one segment per status, each frame on its source slice and equal to the map."""
    hd = pytest.importorskip("highdicom", reason="DICOM SEG needs highdicom")
    import pydicom
    from test_dicom import write_dicom_series

    paths, base, follow, _ = two_visits(tmp_path)
    visit1 = write_dicom_series(tmp_path / "visit1", np.clip(base.image, 0, None) * 10, base.geometry, "1.2.826.0.1.3680043.2.1143.77")
    visit2 = write_dicom_series(tmp_path / "visit2", np.clip(follow.image, 0, None) * 10, follow.geometry, "1.2.826.0.1.3680043.2.1143.78")
    # the baseline exported as a whole study: a T1 series beside the FLAIR, which must be the one compared
    write_dicom_series(visit1, np.clip(base.image[::-1], 0, None) * 7, base.geometry, "1.2.826.0.1.3680043.2.1143.79",
                       prefix="t1_", description="AX T1 SE", extra_tags={"0018|0081": "12"})
    out = tmp_path / "out"
    # a NIfTI follow-up has no slices a SEG could refer to
    assert compare_main(["-b", str(visit1), "-f", str(paths["followup"]), "-o", str(out), "--dicom-seg"]) == 2
    assert "--dicom-seg needs the follow-up as a DICOM series folder" in capsys.readouterr().err
    assert compare_main(["-b", str(visit1), "-f", str(paths["followup"]), "-o", str(out), "--dicom-findings"]) == 2
    assert "--dicom-findings needs the follow-up as a DICOM series folder" in capsys.readouterr().err
    assert compare_main(["-b", str(visit1), "-f", str(paths["followup"]), "-o", str(out), "--dicom-sr"]) == 2
    assert "--dicom-sr needs the follow-up as a DICOM series folder" in capsys.readouterr().err
    assert compare_main(["-b", str(visit1), "-f", str(visit2), "-o", str(out), "--no-picture", "--dicom-seg",
                         "--dicom-findings", "--dicom-sr"]) == 0
    # the findings over the change picture, filed in the follow-up's study (even without change.png)
    capture = pydicom.dcmread(out / "change_findings.dcm")
    first = pydicom.dcmread(next(visit2.iterdir()), stop_before_pixels=True)
    assert capture.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and capture.StudyInstanceUID == first.StudyInstanceUID
    assert capture.SeriesDescription == "DeepWML lesion change findings (research use)" and not (out / "change.png").exists()
    assert capture.pixel_array.shape[2] == 3 and (capture.pixel_array[:40] == 255).all(axis=2).sum() > 100
    summary = json.loads((out / "change.json").read_text())
    assert summary["inputs"]["baseline_mask"] == str(out / "baseline" / "visit1.nii.gz")
    assert summary["registration"]["correlation"] > 0.9
    assert summary["findings"].startswith("Compared with the baseline:")
    change_map = read_label(out / "change.nii.gz").array
    assert change_map.any()
    seg = hd.seg.segread(out / "change_seg.dcm")
    labels = [d.SegmentLabel for d in seg.SegmentSequence]
    assert labels[CHANGE_CODES[NEW] - 1] == "new lesion" and labels[CHANGE_CODES[STABLE] - 1] == "stable lesion"
    assert len(labels) == len(CHANGE_CODES)
    sources = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in visit2.iterdir())}
    normal = np.cross(*np.reshape(next(iter(sources.values())).ImageOrientationPatient, (2, 3)))
    z_of = {ds.SOPInstanceUID: z for z, ds in enumerate(sorted(sources.values(), key=lambda ds: float(np.dot(normal, ds.ImagePositionPatient))))}
    frames = seg.pixel_array.reshape(-1, *change_map.shape[1:])
    seen = set()
    for k, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        z = z_of[group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        assert np.array_equal(frames[k] > 0, change_map[z] == number), f"frame {k}: segment {number}, slice {z}"
        seen.add((number, z))
    assert seen == {(int(v), int(z)) for z in range(change_map.shape[0]) for v in np.unique(change_map[z]) if v}

    # the SR: the comparison's figures as change.json states them, each follow-up lesion's status and outlines
    sr = hd.sr.srread(out / "change_sr.dcm")
    assert sr.StudyInstanceUID == first.StudyInstanceUID and sr.SeriesDescription == "DeepWML lesion change measurements (research use)"
    (measurements,) = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements"]
    comparison = measurements.ContentSequence[0]
    numbers = {i.ConceptNameCodeSequence[0].CodeMeaning: float(i.MeasuredValueSequence[0].NumericValue)
               for i in comparison.ContentSequence if i.ValueType == "NUM"}
    assert numbers["New lesions of 3 mm or more"] == summary["new_lesions"]
    assert numbers["Enlarging lesions"] == summary["enlarging_lesions"]
    assert numbers["Baseline lesions no longer seen"] == summary["resolved_baseline_lesions"]
    assert numbers["Total lesion volume at baseline"] == pytest.approx(summary["baseline_volume_ml"], abs=1e-4)
    assert numbers["Volume"] == pytest.approx(summary["followup_volume_ml"], abs=1e-4)
    table = pd.read_csv(out / "followup_lesions_change.csv")
    lesions = sr.content.get_volumetric_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in lesions] == [f"follow-up lesion {k}" for k in table.lesion_id]
    assert numbers["Lesions itemised in this report"] == len(table)
    from skimage.draw import polygon2mask

    from deepwml.inference.lesion_report import lesion_id_labels

    ids, _ = lesion_id_labels(change_map > 0, 0)
    for group, row in zip(lesions, table.itertuples(index=False)):
        (status,) = [q.value.meaning for q in group.get_qualitative_evaluations() if q.name.meaning == "DeepWML lesion change status"]
        code = int(change_map[ids == row.lesion_id].max())
        assert status == {v: k for k, v in CHANGE_CODES.items()}[code] + " lesion"
        assert status.startswith(row.status)
        drawn = np.zeros(change_map.shape, bool)
        for region in group.roi:
            z = z_of[region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID]
            drawn[z] |= polygon2mask(change_map.shape[1:], np.asarray(region.value, float)[:, ::-1] - 0.5)
        assert np.array_equal(drawn, ids == row.lesion_id), f"follow-up lesion {row.lesion_id}"


def _made_up_head(folder: Path) -> None:
    """One 1 mm 'scan' as benchmarks/longitudinal.py reads them: patient01/flair.nii.gz and wmh.nii.gz."""
    image, lesions, _ = phantom_head()
    zoom = (1.5, 1.5, 1.5)
    image = ndimage.zoom(image, zoom, order=1)
    lesions = ndimage.zoom(lesions.astype(np.float32), zoom, order=1) >= 0.5
    geometry = Geometry(image.shape[::-1], (1.0, 1.0, 1.0), (-75.0, -82.5, -67.5), AXIAL)
    write_image(np.clip(image, 0, None), geometry, folder / "patient01" / "flair.nii.gz")
    write_image(lesions.astype(np.uint8), geometry, folder / "patient01" / "wmh.nii.gz")


def test_the_benchmark_inserts_and_grows_lesions_and_finds_them_in_the_reference_masks(tmp_path, capsys):
    """benchmarks/longitudinal.py on a made-up head with the slab reference masks: every inserted lesion is called
    new and nothing else is, and the registration error it prints is small."""
    from deepwml_testing.benchmarks import load_benchmark

    _made_up_head(tmp_path / "data")
    code = load_benchmark("longitudinal").main(["--data", str(tmp_path / "data"), "--reference", "--new", "2",
                                                "--enlarge", "1", "--thickness", "5", "5"])
    out = capsys.readouterr().out
    assert code == 0, out
    header = [c.strip() for c in next(line for line in out.splitlines() if line.startswith("| scan")).split("|")[1:-1]]
    row = dict(zip(header, [c.strip() for c in next(line for line in out.splitlines() if line.startswith("| patient01")).split("|")[1:-1]]))
    assert row["new made"] == "2" and row["new found"] == "2" and row["false new"] == "0"
    assert row["grown made"] == "1" and row["grown found"] == "1" and row["false enlarging"] == "0"
    # a head of smooth ellipsoids aligns less exactly than a real one (0.06-0.14 mm, docs/prediction.md)
    assert float(row["registration error mm"]) < 1.5


def test_the_benchmark_refuses_a_work_folder_inside_the_repository(capsys):
    from deepwml_testing.benchmarks import load_benchmark

    repo = Path(__file__).resolve().parents[1]
    assert load_benchmark("longitudinal").main(["--work", str(repo / "benchmarks" / "longitudinal_work")]) == 2
    assert "inside the repository" in capsys.readouterr().err


def test_the_benchmark_inserts_exactly_the_lesions_asked_for():
    """--new 0 gives a stable pair (it once filled the brain with lesions: the count was checked after inserting)."""
    from deepwml_testing.benchmarks import load_benchmark

    bench = load_benchmark("longitudinal")
    image, lesions, _ = phantom_head()
    image = np.clip(image, 0, None)
    for n in (0, 2):
        out, inserted = bench.insert_new(image.copy(), lesions, n, np.random.default_rng(0))
        assert ndimage.label(inserted)[1] == n
        changed = out != image  # only at the inserted lesions and their soft edge
        assert not (changed & ~ndimage.binary_dilation(inserted, iterations=2)).any()
        assert changed.any() == (n > 0)


def test_segmenting_into_a_folder_with_unrecorded_segmentations_is_refused(tmp_path, capsys):
    paths, _, _, _ = two_visits(tmp_path, new_lesion=False)
    out = tmp_path / "out"
    (out / "baseline").mkdir(parents=True)
    assert compare_main(["-b", str(paths["baseline"]), "-f", str(paths["followup"]), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "did not record" in err and str(out) in err
    assert not (out / ".deepwml_compare.json").exists()


def test_a_readers_baseline_mask_beside_a_segmented_follow_up(tmp_path, capsys):
    """Only the follow-up is segmented when the baseline comes with its (say, corrected) mask."""
    paths, _, _, _ = two_visits(tmp_path)
    out = tmp_path / "out"
    assert compare_main(["-b", str(paths["baseline"]), "-f", str(paths["followup"]), "-o", str(out), "--no-picture",
                         "--baseline-mask", str(paths["baseline_mask"])]) == 0
    assert "segmenting the follow-up with the pretrained model" in capsys.readouterr().err
    inputs = json.loads((out / "change.json").read_text())["inputs"]
    assert inputs["baseline_mask"] == str(paths["baseline_mask"])
    assert inputs["followup_mask"] == str(out / "followup" / "followup.nii.gz")
    assert not (out / "baseline").exists()
    assert not any("10mm" in key for key in json.loads((out / "change.json").read_text()))  # one visit only: no split


def test_visits_whose_scanned_brain_differs_are_flagged_as_covering_different_parts_of_the_head():
    """A follow-up stack placed lower or shorter than the baseline's holds less brain: lesions leave the field and the
    change says so; a few per cent (what one brain measures at any slice thickness) and missing figures say nothing."""
    from deepwml.longitudinal.run import coverage_warning

    def figures(before, after):
        return {"baseline": {"brain_volume_ml": before}, "followup": {"brain_volume_ml": after}}

    warning = coverage_warning(figures(1100.0, 920.0))
    assert warning and "(1100 ml baseline, 920 ml follow-up)" in warning and "cover different parts of the head" in warning
    assert coverage_warning(figures(880.0, 1000.0))  # more brain at follow-up: as much a different field
    assert coverage_warning(figures(1000.0, 960.0)) is None
    assert coverage_warning(figures(1000.0, float("nan"))) is None and coverage_warning({"baseline": {}}) is None
    assert coverage_warning(figures(0.0, 900.0)) is None  # no brain found at all is the anatomy map's failure, not this

