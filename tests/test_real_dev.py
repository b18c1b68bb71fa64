"""Thick-slice stacks from 3D volumes (deepwml/synthetic/thick_slices.py) and benchmarks/real_dev.py.

Everything runs on small volumes the tests make: the real scans are never needed (CI may not have them).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepwml.imageio import Geometry, read_image, write_image
from deepwml_testing.benchmarks import load_benchmark
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from deepwml.synthetic.thick_slices import SlabSpec, slab_weights, thick_slice_stack
from deepwml.utils.errors import DeepWMLError

REPO = Path(__file__).resolve().parents[1]


def _volume(n_z: int = 10, hw: int = 4, origin=(10.0, -20.0, -5.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    """A 1 mm volume whose every voxel holds its slice index, and an empty label, on a known grid."""
    image = np.broadcast_to(np.arange(n_z, dtype=np.float32)[:, None, None], (n_z, hw, hw)).copy()
    return image, np.zeros_like(image, dtype=np.uint8), Geometry((hw, hw, n_z), (1.0, 1.0, 1.0), origin, direction)


def test_slabs_average_the_voxels_they_cover_and_a_pixel_is_lesion_from_40_percent():
    """5 mm slabs of 1 mm slices average 5 slices; 2 lesion voxels of 5 (40 %) make a lesion pixel, 1 of 5 does not."""
    image, label, geometry = _volume()
    label[0:2, 0, 0] = 1  # 2/5 of slab 0
    label[2, 0, 1] = 1  # 1/5 of slab 0
    label[5:10, 3, 3] = 1  # all of slab 1
    stack = thick_slice_stack(image, label, geometry, SlabSpec(5.0))
    assert stack.image.shape == (2, 4, 4)
    np.testing.assert_allclose(stack.image[:, 0, 0], [2.0, 7.0], rtol=1e-6)  # mean of 0..4 and of 5..9
    assert stack.label[0, 0, 0] == 1 and stack.label[0, 0, 1] == 0 and stack.label[1, 3, 3] == 1
    assert stack.label.sum() == 2
    np.testing.assert_allclose(stack.fraction[0, 0, :2], [0.4, 0.2], rtol=1e-6)


def test_fractional_thickness_weights_partial_voxels_by_overlap():
    """A 2.5 mm slab of 1 mm voxels takes two whole voxels and half of the third, for image and lesion alike."""
    np.testing.assert_allclose(slab_weights(5, 1.0, 2.5), [[0.4, 0.4, 0.2, 0, 0], [0, 0, 0.2, 0.4, 0.4]], atol=1e-7)
    image, label, geometry = _volume(n_z=5)
    label[0, 0, 0] = 1  # 1 mm of 2.5 mm = 40 %
    label[2, 1, 1] = 1  # half a voxel of 2.5 mm = 20 % in both slabs
    stack = thick_slice_stack(image, label, geometry, SlabSpec(2.5))
    np.testing.assert_allclose(stack.image[:, 0, 0], [0.8, 3.2], rtol=1e-6)  # (0 + 1 + 0.5*2) / 2.5, (0.5*2 + 3 + 4) / 2.5
    assert stack.label[0, 0, 0] == 1 and stack.label[:, 1, 1].sum() == 0


def test_geometry_spacing_origin_at_slab_centre_and_partial_last_slab_dropped(tmp_path):
    """12 mm of volume in 5 mm slabs gives 2 slabs (the last 2 mm dropped); with a 1 mm gap, 3 mm slabs every 4 mm give 3."""
    image, label, geometry = _volume(n_z=12, origin=(10.0, -20.0, -5.0))
    stack = thick_slice_stack(image, label, geometry, SlabSpec(5.0))
    g = stack.geometry
    assert g.size == (4, 4, 2) and g.spacing == (1.0, 1.0, 5.0)
    # first source voxel centred at z=-5, its lower edge at -5.5; the first 5 mm slab is centred 2.5 mm above that
    np.testing.assert_allclose(g.origin, (10.0, -20.0, -3.0))
    gapped = thick_slice_stack(image, label, geometry, SlabSpec(3.0, gap_mm=1.0)).geometry
    assert gapped.size[2] == 3 and gapped.spacing[2] == 4.0
    np.testing.assert_allclose(gapped.origin, (10.0, -20.0, -4.0))
    # a source running inferior-ward: slabs follow its direction, the first slab centred 2.5 mm below the first voxel edge
    flipped = Geometry(geometry.size, geometry.spacing, geometry.origin, (1, 0, 0, 0, 1, 0, 0, 0, -1))
    g_flipped = thick_slice_stack(image, label, flipped, SlabSpec(5.0)).geometry
    np.testing.assert_allclose(g_flipped.origin, (10.0, -20.0, -7.0))
    assert g_flipped.direction == flipped.direction
    # the NIfTI the benchmark writes carries that geometry
    back = read_image(write_image(stack.image, g, tmp_path / "stack.nii.gz"))
    assert back.geometry.mismatches(g) == []
    np.testing.assert_allclose(back.array, stack.image)


def test_slabs_are_taken_along_superior_inferior_whatever_the_array_order():
    """A volume stored with S-I as its first ITK axis (sagittal layout) gives the same axial stack as the axial layout."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(10, 6, 8)).astype(np.float32)  # (z, y, x): z is S-I
    label = (rng.random(image.shape) > 0.6).astype(np.uint8)
    axial = Geometry((8, 6, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    reference = thick_slice_stack(image, label, axial, SlabSpec(5.0))
    # the same voxels with ITK axes (S-I, A-P, L-R): world z is the index x axis
    stored = np.transpose(image, (2, 1, 0))  # numpy (L-R, A-P, S-I) = ITK (x=S-I, y=A-P, z=L-R)
    stored_label = np.transpose(label, (2, 1, 0))
    sagittal = Geometry((10, 6, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0, 0, 1, 0, 1, 0, 1, 0, 0))
    other = thick_slice_stack(stored, stored_label, sagittal, SlabSpec(5.0))
    np.testing.assert_allclose(other.image, reference.image, rtol=1e-6)
    np.testing.assert_array_equal(other.label, reference.label)
    np.testing.assert_allclose(other.geometry.index_to_world([[1, 2, 1]]), reference.geometry.index_to_world([[1, 2, 1]]))


def test_inplane_resampling_keeps_the_field_of_view():
    """Resampling 20 mm at 1 mm to 0.5 mm gives 40 pixels, and the outer pixel edges stay where they were."""
    image, label, geometry = _volume(n_z=10, hw=20, origin=(0.0, 0.0, 0.0))
    label[:, 5:15, 5:15] = 1
    stack = thick_slice_stack(image, label, geometry, SlabSpec(5.0, inplane_mm=0.5))
    g = stack.geometry
    assert stack.image.shape == (2, 40, 40) and g.spacing == (0.5, 0.5, 5.0)
    np.testing.assert_allclose(g.origin, (-0.25, -0.25, 2.0))
    assert stack.label.sum() == 2 * 20 * 20  # the 10 × 10 mm lesion square at twice the resolution


def _benchmark():
    """benchmarks/real_dev.py as a module."""
    return load_benchmark("real_dev")


def test_missing_data_folder_is_one_clear_line_and_exit_2(tmp_path, capsys):
    """A checkout without the real scans: the benchmark names the folder, says what it expects and how to point at it."""
    missing = tmp_path / "no_such_folder"
    code = _benchmark().main(["--data", str(missing), "-m", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(missing) in err and "folder not found" in err and "--data" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    (tmp_path / "empty" / "patient01").mkdir(parents=True)
    with pytest.raises(DeepWMLError, match="holds no scans.*flair.nii.gz"):
        _benchmark().find_scans(tmp_path / "empty")


def test_work_folder_inside_the_repository_is_refused():
    """Derived stacks of the real scans must never land where git could pick them up."""
    with pytest.raises(DeepWMLError, match="inside the repository"):
        _benchmark().check_work_folder(REPO / "benchmarks" / "realdev_work")


def _made_up_scans(tmp_path: Path) -> Path:
    """Two small 1 mm 'scans' with a bright lesion each, and a threshold toy model; returns the model folder."""
    rng = np.random.default_rng(1)
    geometry = Geometry((64, 64, 30), (1.0, 1.0, 1.0), (-32.0, -32.0, -15.0))
    zz, yy, xx = np.mgrid[:30, :64, :64]
    for name in ("patient01", "patient02"):
        head = ((yy - 32) ** 2 + (xx - 32) ** 2 < 28**2)
        lesion = ((yy - 25) ** 2 + (xx - 30) ** 2 < 16) & (zz >= 8) & (zz < 22)
        flair = np.where(head, 100.0, 0.0) + 150.0 * lesion + rng.normal(0, 5, head.shape) * head
        write_image(flair.astype(np.float32), geometry, tmp_path / "data" / name / "flair.nii.gz")
        write_image(lesion.astype(np.uint8), geometry, tmp_path / "data" / name / "wmh.nii.gz")
    return write_model_dir(tmp_path / "results" / "Dataset998_Toy" / "toy", tiny_plan(matrix=64), kind="threshold")


def _run_on_made_up_scans(tmp_path: Path, capsys, *options: str):
    """The benchmark's output and its rows (one per scan × thickness) on :func:`_made_up_scans`."""
    model = _made_up_scans(tmp_path)
    code = _benchmark().main(["--data", str(tmp_path / "data"), "-m", str(model), *options,
                              "--work", str(tmp_path / "work"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    return out, [line for line in out.splitlines() if line.startswith("| patient")]


def test_benchmark_runs_end_to_end_on_made_up_scans(tmp_path, capsys):
    """Two small 'scans' with bright lesions, a threshold toy model: a table of every scan × thickness and the means."""
    out, rows = _run_on_made_up_scans(tmp_path, capsys, "--thickness", "5", "6.5")
    assert [r.split("|")[1:3] for r in rows] == [[" patient01 ", " 5 "], [" patient01 ", " 6.5 "],
                                                 [" patient02 ", " 5 "], [" patient02 ", " 6.5 "]]
    dice = [float(r.split("|")[7]) for r in rows]
    assert all(d > 0.5 for d in dice), out  # a bright 4 mm-radius lesion: the threshold model finds it
    assert "**mean 6.5 mm**" in out and "**mean, all** |  | 4 stacks" in out and "time:" in out
    assert sorted(p.name for p in (tmp_path / "work" / "images").iterdir()) == [
        "patient01_5mm.nii.gz", "patient01_6p5mm.nii.gz", "patient02_5mm.nii.gz", "patient02_6p5mm.nii.gz"]


def test_components_reads_the_models_probabilities_end_to_end(tmp_path, capsys):
    """--components has deepwml_predict keep each stack's probability map, and the table gives the true lesions' highest
    probability from it (the threshold toy model is sure of its bright lesions)."""
    out, _ = _run_on_made_up_scans(tmp_path, capsys, "--thickness", "5", "--components")
    assert (tmp_path / "work" / "predictions" / "patient01_5mm_prob.nii.gz").is_file()
    cells = [line.split("|") for line in out.splitlines() if line.startswith("| true positive |")]
    counted = [c for c in cells if int(c[3]) > 0]
    assert counted and all(float(c[-2]) > 0.5 for c in counted), out


def test_with_averages_the_probabilities_of_models_of_other_plans(tmp_path, capsys):
    """--with: every model predicts the stacks with probability maps and deepwml_ensemble averages them; weights
    1, 0 give the first model's figures exactly, and a weight count that does not match the models is refused."""
    out, rows = _run_on_made_up_scans(tmp_path, capsys, "--thickness", "5")
    other = write_model_dir(tmp_path / "results" / "Dataset998_Toy" / "toy48", tiny_plan(matrix=48, name="toy48"), kind="threshold")
    bench = _benchmark()
    args = ["--data", str(tmp_path / "data"), "-m", str(tmp_path / "results" / "Dataset998_Toy" / "toy"), "--thickness", "5",
            "--work", str(tmp_path / "work2"), "--device", "cpu", "--with", str(other)]
    assert bench.main(args + ["--weights", "1", "0"]) == 0
    first_only = capsys.readouterr().out
    assert f"averaged with: {other}" in first_only and "weights 1 0" in first_only
    assert [r for r in first_only.splitlines() if r.startswith("| patient")] == rows
    assert sorted(p.name for p in (tmp_path / "work2").iterdir()) == ["images", "predictions", "predictions_model0",
                                                                     "predictions_model1"]
    assert (tmp_path / "work2" / "predictions_model1" / "patient01_5mm_prob.nii.gz").is_file()
    assert bench.main(args) == 0
    both = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| patient")]
    assert [float(r.split("|")[7]) for r in both] and all(float(r.split("|")[7]) > 0.5 for r in both)
    assert bench.main(args + ["--weights", "1"]) == 2
    assert "--weights gives 1 weight(s) for 2 model(s)" in capsys.readouterr().err


def test_native_and_sagittal_also_score_each_scan_as_3d_volumes_against_their_own_masks(tmp_path, capsys):
    """--native: each 1 mm scan is predicted as it is and scored on its 1 mm mask, a row and a mean of their own;
    --sagittal 1.2: also re-acquired in 1.2 mm left-right partitions, stored as a sagittal series is."""
    out, lines = _run_on_made_up_scans(tmp_path, capsys, "--thickness", "5", "--native", "--sagittal", "1.2")
    rows = [line.split("|") for line in lines]
    assert [r[1:4] for r in rows] == [[" patient01 ", " 1 ", " 30 "], [" patient01 ", " 1.2 ", " 30 "],
                                      [" patient01 ", " 5 ", " 6 "], [" patient02 ", " 1 ", " 30 "],
                                      [" patient02 ", " 1.2 ", " 30 "], [" patient02 ", " 5 ", " 6 "]]
    assert float(rows[0][7]) > 0.5 and "**mean 1 mm** |  | 2 stacks" in out
    assert (tmp_path / "work" / "images" / "patient01_native.nii.gz").is_file()
    # the bright lesion is found in the sagittal files too, which are read in axial planes (30 slices of 1 mm)
    assert float(rows[1][7]) > 0.5 and float(rows[4][7]) > 0.5, out
    written = read_image(tmp_path / "work" / "images" / "patient01_sagittal.nii.gz")
    assert written.geometry.size == (64, 30, 53) and written.geometry.slice_axis == 1


def test_coronal_scans_are_predicted_in_axial_planes_end_to_end(tmp_path, capsys):
    """--coronal 1.2: each scan re-acquired in 1.2 mm front-to-back partitions; its row reads 30 axial slices, and
    the bright lesion is found there."""
    out, lines = _run_on_made_up_scans(tmp_path, capsys, "--thickness", "5", "--coronal", "1.2")
    rows = [line.split("|") for line in lines]
    assert [r[1:4] for r in rows] == [[" patient01 ", " 1.2 ", " 30 "], [" patient01 ", " 5 ", " 6 "],
                                      [" patient02 ", " 1.2 ", " 30 "], [" patient02 ", " 5 ", " 6 "]]
    assert float(rows[0][7]) > 0.5 and float(rows[2][7]) > 0.5, out
    written = read_image(tmp_path / "work" / "images" / "patient01_coronal.nii.gz")
    assert written.geometry.size[1] == 30 and written.geometry.slice_axis == 1


def test_sagittal_reslices_a_scan_into_left_right_partitions_stored_as_a_sagittal_series():
    """--sagittal MM: each 3D scan resliced into MM-thick left-right partitions, its file's third axis left-right (a
    sagittal series as stored), every voxel where it was."""
    bench = _benchmark()
    geometry = Geometry((40, 30, 20), (1.0, 1.0, 1.0), (5.0, -7.0, 3.0))
    image = np.random.default_rng(2).random((20, 30, 40)).astype(np.float32)  # numpy (S-I, A-P, L-R)
    mask = (image > 0.9).astype(np.uint8)
    same, same_mask, stored = bench.partitioned_volume(image, mask, geometry, 1.0, "sagittal")
    assert same.shape == (40, 20, 30) and stored.size == (30, 20, 40) and stored.spacing == (1.0, 1.0, 1.0)
    assert np.allclose(stored.direction_matrix[:, 2], [1, 0, 0]) and np.allclose(stored.direction_matrix[:, 1], [0, 0, 1])
    # a voxel keeps its world position: index (x, y, z) of the stored file is (A-P, S-I, L-R) = (j, k, i)
    assert np.array_equal(same, image.transpose(2, 0, 1)) and np.array_equal(same_mask, mask.transpose(2, 0, 1))
    i, j, k = 13, 7, 4
    world = np.asarray(stored.origin) + stored.direction_matrix @ (np.array([j, k, i]) * np.asarray(stored.spacing))
    assert np.allclose(world, np.asarray(geometry.origin) + np.array([i, j, k]))
    thick, _, stored = bench.partitioned_volume(image, mask, geometry, 1.25, "sagittal")
    assert thick.shape == (32, 20, 30) and stored.spacing == (1.0, 1.0, 1.25)
    assert np.allclose(thick[4], image[:, :, 5])  # partition 4 lies 5 mm from the first, on a voxel of the scan


def test_coronal_reslices_a_scan_into_front_back_partitions_stored_as_a_coronal_series():
    """--coronal MM: each 3D scan resliced into MM-thick anterior-posterior partitions, its file's first axis
    left-right, second superior-inferior, third anterior-posterior (a coronal series as stored), every voxel where it
    was; DeepWML reads it in axial planes."""
    bench = _benchmark()
    geometry = Geometry((40, 30, 20), (1.0, 1.0, 1.0), (5.0, -7.0, 3.0))
    image = np.random.default_rng(3).random((20, 30, 40)).astype(np.float32)  # numpy (S-I, A-P, L-R)
    mask = (image > 0.9).astype(np.uint8)
    same, same_mask, stored = bench.partitioned_volume(image, mask, geometry, 1.0, "coronal")
    assert same.shape == (30, 20, 40) and stored.size == (40, 20, 30)
    assert np.allclose(stored.direction_matrix[:, 0], [1, 0, 0]) and np.allclose(stored.direction_matrix[:, 2], [0, 1, 0])
    assert np.array_equal(same, image.transpose(1, 0, 2)) and np.array_equal(same_mask, mask.transpose(1, 0, 2))
    # index (x, y, z) of the stored file is (L-R, S-I, A-P) = (k, i, j)
    i, j, k = 13, 7, 4
    world = np.asarray(stored.origin) + stored.direction_matrix @ (np.array([k, i, j]) * np.asarray(stored.spacing))
    assert np.allclose(world, np.asarray(geometry.origin) + np.array([k, j, i]))
    thick, _, stored = bench.partitioned_volume(image, mask, geometry, 1.5, "coronal")
    assert thick.shape == (20, 20, 40) and stored.spacing == (1.0, 1.0, 1.5)
    assert np.allclose(thick[2], image[:, 3, :])  # partition 2 lies 3 mm from the first, on a voxel of the scan
    assert np.allclose(thick[1], (image[:, 1, :] + image[:, 2, :]) / 2)  # 1.5 mm: halfway between two
    # the thick spacing runs front to back, yet the slice axis DeepWML reads is the file's S-I axis (axial planes)
    assert stored.slice_axis == 1


def test_sagittal_and_coronal_are_one_or_the_other(capsys):
    """Their rows would share the thickness column: asking for both is an error naming the two options."""
    with pytest.raises(SystemExit):
        _benchmark().main(["--data", "x", "--sagittal", "1.2", "--coronal", "1.2"])
    assert "--coronal: not allowed with argument --sagittal" in capsys.readouterr().err


def test_contrast_figures_measure_lesions_against_the_stripped_brain():
    """--contrast: lesion / brain median, IQR units and the bright tail, measured without the 0 background."""
    rng = np.random.default_rng(0)
    image = np.zeros((4, 40, 40), np.float32)
    image[:, 5:35, 5:35] = rng.choice([100.0, 120.0], size=(4, 30, 30))  # white and grey matter, IQR 20
    label = np.zeros(image.shape, bool)
    label[:, 10:14, 10:14] = True
    image[label] = 140.0
    f = _benchmark().contrast_figures(image, label)
    assert f["lesion_ratio"] == pytest.approx(140.0 / np.median(image[(image > 0) & ~label]))
    median = np.median(image[(image > 0) & ~label])
    assert f["lesion_iqr_units"] == pytest.approx((140.0 - median) / 20.0)
    assert f["p97_ratio"] == pytest.approx(120.0 / median)
    line = _benchmark().contrast_table([_benchmark().StackCase("p", 5.0, "p_5mm", label, None, f)]).splitlines()[-1]
    assert line.startswith("| p_5mm | ") and f"{f['lesion_iqr_units']:.2f}" in line


def test_tilt_nods_the_head_about_the_left_right_axis_and_keeps_the_lesion():
    """--tilt: stacks no longer MNI-aligned; a lesion off-centre moves along superior-inferior, its size is kept."""
    bench = _benchmark()
    geometry = Geometry((40, 50, 60), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    zz, yy, xx = np.mgrid[:60, :50, :40]
    lesion = ((zz - 30) ** 2 + (yy - 40) ** 2 + (xx - 20) ** 2 <= 16).astype(np.uint8)
    image = 100.0 + 100.0 * lesion
    same = bench.pitch_volume(image, lesion, geometry, 0.0)
    assert same[0] is image and same[1] is lesion
    out, mask, geom = bench.pitch_volume(image, lesion, geometry, 15.0)
    assert out.shape == image.shape and geom.size == geometry.size
    z_before, z_after = np.argwhere(lesion)[:, 0].mean(), np.argwhere(mask)[:, 0].mean()
    # 15 mm anterior-posterior from the centre: a 15 degree nod moves it about 15 * sin(15) = 3.9 mm along z
    assert 3.0 < abs(z_after - z_before) < 4.8
    assert np.argwhere(mask)[:, 2].mean() == pytest.approx(20.0, abs=0.2)  # left-right unchanged
    assert abs(int(mask.sum()) - int(lesion.sum())) <= 0.25 * lesion.sum()


def test_white_matter_only_tta_keep_outside_brain_and_anatomy_model_reach_deepwml_predict(tmp_path, monkeypatch):
    """--white-matter-only, --tta / --no-tta, --keep-outside-brain and --anatomy-model are deepwml_predict's options,
    passed on as they are (neither TTA option: the model's own choice; no anatomy model named: the shipped one)."""
    bench = _benchmark()
    geometry = Geometry((16, 16, 12), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    write_image(np.ones((12, 16, 16), np.float32), geometry, tmp_path / "data" / "patient01" / "flair.nii.gz")
    write_image(np.zeros((12, 16, 16), np.uint8), geometry, tmp_path / "data" / "patient01" / "wmh.nii.gz")
    model = write_model_dir(tmp_path / "results" / "Dataset998_Toy" / "toy", tiny_plan(matrix=16), kind="threshold")
    asked = []

    class Stop(Exception):
        pass

    def fake_predict(request):
        asked.append(request)
        raise Stop

    monkeypatch.setattr(bench, "predict", fake_predict)
    for extra in ([], ["--white-matter-only", "--tta", "--keep-outside-brain"], ["--no-tta", "--anatomy-model", str(tmp_path / "a")]):
        with pytest.raises(Stop):
            bench._main(["--data", str(tmp_path / "data"), "-m", str(model), "--thickness", "5", *extra])
    assert [(r.white_matter_only, r.tta, r.keep_outside_brain, r.anatomy_model) for r in asked] == [
        (False, None, False, None), (True, True, True, None), (False, False, False, tmp_path / "a")]


def test_errors_lists_the_largest_false_positive_and_missed_components_with_their_world_position():
    """--errors N: each stack's largest false-positive and missed components, with their size, centre in world RAS mm
    (MNI coordinates for MNI-registered scans) and intensity against the brain median, largest first."""
    bench = _benchmark()
    # an LPS grid: x grows to the patient's left, so RAS x is minus the world x
    geometry = Geometry((20, 20, 10), (1.0, 1.0, 5.0), (-10.0, -10.0, -20.0))
    image = np.full((10, 20, 20), 100.0, np.float32)
    label = np.zeros(image.shape, bool)
    label[4, 2:4, 2:4] = True  # missed: 4 voxels
    label[6, 10:15, 10:15] = True  # found
    predicted = label.copy()
    predicted[4, 2:4, 2:4] = False
    predicted[2, 15:18, 5:8] = True  # false positive: 9 voxels around index (z 2, y 16, x 6)
    predicted[8, 0, 0] = True  # false positive: 1 voxel
    image[predicted & ~label] = 130.0
    case = bench.StackCase("patient01", 5.0, "patient01_5mm", label, geometry)
    rows = bench.error_components(case, image, predicted, top=1)
    assert [(r["kind"], r["voxels"]) for r in rows] == [("false positive", 9), ("missed", 4)]
    fp = rows[0]
    assert fp["ul"] == pytest.approx(45.0) and fp["ratio"] == pytest.approx(1.3)
    assert fp["ras"] == pytest.approx((-(-10.0 + 6.0), -(-10.0 + 16.0), -20.0 + 2 * 5.0))
    table = bench.error_table(rows)
    assert "| patient01_5mm | false positive | 9 | 45 | 4 -6 -10 | 1.30 |" in table
    assert len(bench.error_components(case, image, predicted, top=3)) == 3  # both false positives, one missed


def test_components_profile_counts_each_lesion_as_f1_does_with_its_size_and_intensity():
    """--components: every predicted component touching the reference is a true positive, every other a false positive,
    every reference component no prediction touches is missed; counted by size class with intensity quartiles."""
    bench = _benchmark()
    geometry = Geometry((20, 20, 10), (1.0, 1.0, 5.0), (-10.0, -10.0, -20.0))
    image = np.full((10, 20, 20), 100.0, np.float32)
    label = np.zeros(image.shape, bool)
    label[4, 2:4, 2:4] = True  # missed, 4 voxels, faint
    label[6, 10:18, 10:18] = True  # found: 64 voxels
    predicted = np.zeros(image.shape, bool)
    predicted[6, 12:14, 12:14] = True  # touches the found lesion: one true positive of 4 voxels
    predicted[2, 15:18, 2:6] = True  # false positive: 12 voxels (no twin: its mirror image, x 14-17, is empty)
    image[label] = 140.0
    image[4, 2:4, 2:4] = 110.0
    image[2, 15:18, 2:6] = 125.0
    case = bench.StackCase("patient01", 5.0, "patient01_5mm", label, geometry)
    rows = bench.component_profile(case, image, predicted)
    got = sorted((r["kind"], r["voxels"], round(r["ratio"], 2)) for r in rows)
    assert got == [("false positive", 12, 1.25), ("missed", 4, 1.1), ("true positive", 4, 1.4)]
    assert not any(r["twin"] for r in rows)
    # the false positive's nearest reference voxel: 2 slabs (10 mm) and 12 rows (12 mm) away from the missed lesion
    assert [round(r["gap_mm"], 2) for r in rows if r["kind"] == "false positive"] == [15.62]
    table = bench.profile_table(rows)
    assert "| false positive | 11-50 | 1 | 1.25 / 1.25 / 1.25 | 0% | 15.6 |" in table
    assert "| missed | 1-10 | 1 | 1.10 / 1.10 / 1.10 | 0% | – |" in table
    assert "| true positive | > 50 | 0 | – | – | – |" in table


def test_components_profile_tells_missed_lesions_the_model_never_saw_from_those_a_threshold_lost():
    """--components with the model's probabilities: each component's highest probability, and the count of missed
    lesions under 0.05 throughout (no threshold or filter finds them) apart from those the threshold or a filter lost."""
    bench = _benchmark()
    geometry = Geometry((20, 20, 10), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    image = np.full((10, 20, 20), 100.0, np.float32)
    label = np.zeros(image.shape, bool)
    label[2, 2:4, 2:4] = True  # missed, never seen
    label[5, 2:4, 2:4] = True  # missed, seen under the threshold
    label[8, 10:14, 10:14] = True  # found
    predicted = np.zeros(image.shape, bool)
    predicted[8, 11:13, 11:13] = True
    probs = np.zeros(image.shape, np.float32)
    probs[2, 2, 2] = 0.04
    probs[5, 3, 3] = 0.3
    probs[8, 11:13, 11:13] = 0.9
    probs[8, 12, 12] = 0.97
    case = bench.StackCase("p", 5.0, "p_5mm", label, geometry)
    rows = bench.component_profile(case, image, predicted, probs)
    assert sorted((r["kind"], r["peak"]) for r in rows) == [("missed", pytest.approx(0.04)), ("missed", pytest.approx(0.3)),
                                                           ("true positive", pytest.approx(0.97))]
    table = bench.profile_table(rows)
    assert "| missed | 1-10 | 2 | 1.00 / 1.00 / 1.00 | 0% | – | 0.17 |" in table
    assert "stays under 0.05 throughout: 1 of 2" in table
    # masks of another tool (no probabilities): the column is empty and the count left out
    table = bench.profile_table(bench.component_profile(case, image, predicted))
    assert "| missed | 1-10 | 2 | 1.00 / 1.00 / 1.00 | 0% | – | – |" in table and "throughout" not in table


def test_components_profile_marks_components_with_a_twin_across_the_midline():
    """--components: a false positive mirrored by another across the left-right midline is bilateral (normal bright
    tissue is), one alone is not; the left-right axis comes from the stack's direction, whatever the array order."""
    bench = _benchmark()
    label = np.zeros((10, 20, 20), bool)
    label[6, 10:14, 10:14] = True
    predicted = label.copy()
    predicted[2, 5:7, 2:4] = True  # x 2-3 ...
    predicted[2, 6:8, 16:18] = True  # ... and its twin at x 16-17 (mirror 2-3), one voxel off in y
    predicted[8, 15:17, 3:5] = True  # alone
    image = np.full(label.shape, 100.0, np.float32)
    rows = bench.component_profile(bench.StackCase("p", 5.0, "p_5mm", label, Geometry((20, 20, 10), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))), image, predicted)
    fps = sorted((r["voxels"], r["twin"]) for r in rows if r["kind"] == "false positive")
    assert [t for _, t in fps] == [False, True, True]
    assert "| false positive | 1-10 | 3 | 1.00 / 1.00 / 1.00 | 67% |" in bench.profile_table(rows)
    assert all(r["gap_mm"] > 0 for r in rows if r["kind"] == "false positive")
    # the same stack with x and y swapped in the array: the direction names y as left-right, so nothing changes
    swapped = Geometry((20, 20, 10), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0), direction=(0, 1, 0, 1, 0, 0, 0, 0, 1))
    rows = bench.component_profile(bench.StackCase("p", 5.0, "p_5mm", label.swapaxes(1, 2), swapped), image,
                                   predicted.swapaxes(1, 2))
    assert sorted(r["twin"] for r in rows if r["kind"] == "false positive") == [False, True, True]


def test_table_means_the_heavy_stacks_apart():
    """The held-back patients all carry >= 10 ml; the table gives the mean over stacks with such a load as well."""
    bench = _benchmark()
    base = {"slabs": 20, "matrix": "10x10", "failed": False, "pred_volume_ml": 1.0, "hd95_mm": 1.0, "avd_percent": 1.0,
            "lesion_recall": 1.0, "lesion_f1": 1.0}
    rows = [{**base, "scan": "light", "thickness": 5.0, "ref_volume_ml": 1.0, "dice": 0.1},
            {**base, "scan": "heavy", "thickness": 5.0, "ref_volume_ml": 20.0, "dice": 0.7},
            {**base, "scan": "heavier", "thickness": 5.0, "ref_volume_ml": 40.0, "dice": 0.8},
            {"scan": "broken", "thickness": 5.0, "slabs": 20, "matrix": "10x10", "failed": True}]
    heavy = bench.table(rows, [5.0]).splitlines()[-1]
    assert heavy.startswith("| **mean, ref >= 10 ml** |  | 2 stacks |  | 30.0 | 1.0 | 0.750 |")


def test_add_head_wraps_the_stripped_brain_in_skull_and_scalp_and_leaves_brain_and_lesions_alone(tmp_path, capsys):
    """--add-head: outside the brain, shells outward as a FLAIR shows them (CSF and bone dark, diploe grey, scalp fat
    brighter than the brain's median, air at noise level); the brain's voxels are unchanged; the benchmark's stacks
    carry the head and the same slab labels; --contrast (skull-stripped figures) is refused with it."""
    from deepwml_testing.benchmarks import load_benchmark as load

    head = load("synthetic_head")
    zz, yy, xx = np.mgrid[:40, :80, :80]
    brain = (zz - 20) ** 2 + (yy - 40) ** 2 + (xx - 40) ** 2 < 12**2
    image = np.where(brain, 100.0, 0.0).astype(np.float32)
    wrapped = head.wrap_in_head(image, (1.0, 1.0, 1.0), seed=3)
    np.testing.assert_array_equal(wrapped[brain], image[brain])
    radius = np.sqrt((zz - 20) ** 2 + (yy - 40) ** 2 + (xx - 40) ** 2)

    def ring(lo: float, hi: float) -> float:
        return float(np.median(wrapped[(radius >= 12 + lo) & (radius < 12 + hi)]))

    csf, bone, diploe, fat, air = ring(1, 2), ring(3, 4), ring(5.5, 7), ring(11.5, 13.5), ring(20, 24)
    assert bone < csf < diploe < 100 < fat and air < 10, (csf, bone, diploe, fat, air)
    assert (wrapped >= 0).all() and np.isfinite(wrapped).all()
    out, rows = _run_on_made_up_scans(tmp_path, capsys, "--thickness", "5", "--add-head")
    assert "a synthetic skull and scalp around each brain" in out and len(rows) == 2
    stack = read_image(tmp_path / "work" / "images" / "patient01_5mm.nii.gz").array
    assert stack[:, 0:2, :].max() > 20  # the scalp reaches the field's edge on these small made-up heads
    assert _benchmark().main(["--data", str(tmp_path / "data"), "--builtin", "--add-head", "--contrast"]) == 2
    assert "--contrast measures skull-stripped stacks" in capsys.readouterr().err


def test_with_a_head_the_brain_median_of_the_error_figures_is_still_the_brains(tmp_path):
    """--errors and --components give intensities over the brain median: with --add-head the stack's brain is the
    stripped brain taken before the head was added (tilted with it), not the image's non-zero voxels (air and scalp)."""
    zz, yy, xx = np.mgrid[:30, :96, :96]
    brain = (yy - 48) ** 2 + (xx - 48) ** 2 < 16**2  # a small brain in a wide field: mostly air around the head
    flair = np.where(brain, 100.0, 0.0) + np.random.default_rng(0).normal(0, 5, brain.shape) * brain
    geometry = Geometry((96, 96, 30), (1.0, 1.0, 1.0), (-48.0, -48.0, -15.0))
    write_image(flair.astype(np.float32), geometry, tmp_path / "data" / "patient01" / "flair.nii.gz")
    write_image(np.zeros(brain.shape, np.uint8), geometry, tmp_path / "data" / "patient01" / "wmh.nii.gz")
    bench = _benchmark()
    scans = bench.find_scans(tmp_path / "data")
    spec = {5.0: bench.SlabSpec(5.0)}
    for tilt in (0.0, 12.0):
        plain = bench.make_stacks(scans[:1], spec, tmp_path / f"plain{tilt:g}", tilt=tilt)[0]
        headed = bench.make_stacks(scans[:1], spec, tmp_path / f"head{tilt:g}", tilt=tilt, add_head=True)[0]
        image = read_image(tmp_path / f"head{tilt:g}" / f"{headed.case_id}.nii.gz").array
        assert plain.brain is None and headed.brain.shape == image.shape
        assert abs(bench.normal_brain_median(headed, image) - 100.0) < 5  # the made-up brain is 100 + noise
        brain_found = bench.stripped_brain(image) & ~headed.label  # the image's own non-zero voxels: air and scalp too
        assert np.median(image[brain_found]) < 80
        plain_image = read_image(tmp_path / f"plain{tilt:g}" / f"{plain.case_id}.nii.gz").array
        stripped = bench.stripped_brain(plain_image)  # the brain the stack without the head shows
        assert 2 * (headed.brain & stripped).sum() / (headed.brain.sum() + stripped.sum()) > 0.95


def test_confidence_tells_true_from_false_lesions_by_their_table_confidence(tmp_path):
    """--confidence: each lesion of deepwml_predict's table is true when its voxels touch the reference; the AUC is
    the share of (true, false) pairs in which the true lesion is the more confident, per location class too."""
    bench = _benchmark()
    geometry = Geometry((10, 10, 4), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    label = np.zeros((4, 10, 10), bool)
    label[1, 1:3, 1:3] = True
    label[2, 6:8, 6:8] = True
    ids = np.zeros(label.shape, np.uint16)
    ids[1, 2:4, 2:4] = 1  # overlaps the first reference lesion
    ids[2, 7, 7] = 2  # inside the second
    ids[0, 8, 0] = 3  # false
    ids[3, 0, 8] = 4  # false
    write_image(ids, geometry, tmp_path / "s_5mm_lesionids.nii.gz")
    (tmp_path / "s_5mm_lesions.csv").write_text(
        "lesion_id,voxels,location,confidence\n1,4,periventricular,0.8\n2,1,deep,0.6\n3,1,cortical,0.1\n4,1,deep,0.7\n")
    rows = bench.lesion_confidence(bench.StackCase("s", 5.0, "s_5mm", label, geometry), tmp_path)
    assert [(r["true"], r["location"]) for r in rows] == [(True, "periventricular"), (True, "deep"), (False, "cortical"),
                                                         (False, "deep")]
    table = bench.confidence_table(rows)
    # all: 0.8 and 0.6 against 0.1 and 0.7: 3 of 4 pairs ordered; deep: 0.6 against 0.7: none
    assert "| all | 2 / 2 | 0.70 / 0.40 | 0.75 |" in table
    assert "| deep | 1 / 1 | 0.60 / 0.70 | 0.00 |" in table
    assert "| periventricular | 1 / 0 | 0.80 / – | n/a |" in table


def test_confidence_runs_end_to_end_and_is_refused_with_an_average_of_models(tmp_path, capsys):
    """--confidence prints its table after the stacks' rows; an average of models (--with) has no lesion tables."""
    out, rows = _run_on_made_up_scans(tmp_path, capsys, "--thickness", "5", "--confidence")
    assert len(rows) == 2 and "| lesions | true / false |" in out
    assert "| all | 2 / 0 |" in out  # each made-up scan's one bright lesion, found
    code = _benchmark().main(["--data", str(tmp_path / "data"), "-m", str(tmp_path / "results" / "Dataset998_Toy" / "toy"),
                              "--confidence", "--with", "builtin", "--work", str(tmp_path / "w2")])
    assert code == 2 and "--confidence reads deepwml_predict's lesion tables" in capsys.readouterr().err


def test_another_tools_masks_of_the_stacks_score_as_the_models_own(tmp_path, capsys):
    """--stacks-only writes the stacks and no model runs; masks another tool made of them (here the toy model's, with
    lesion stored as 255) score exactly as the model's own run did; a mask off the stack's grid, a missing mask and
    model options are each one clear line."""
    out, rows = _run_on_made_up_scans(tmp_path, capsys, "--thickness", "5")
    bench = _benchmark()
    data = ["--data", str(tmp_path / "data"), "--thickness", "5"]
    assert bench.main(data + ["--stacks-only", "--work", str(tmp_path / "stacks")]) == 0
    assert "wrote 2 stacks" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "stacks").iterdir()) == ["images"]
    # --labels: each stack's slab mask beside it, on its grid (for per-lesion analyses)
    assert bench.main(data + ["--stacks-only", "--labels", "--work", str(tmp_path / "labelled")]) == 0
    capsys.readouterr()
    for name in ("patient01_5mm", "patient02_5mm"):
        mask = read_image(tmp_path / "labelled" / "labels" / f"{name}.nii.gz")
        assert mask.geometry == read_image(tmp_path / "stacks" / "images" / f"{name}.nii.gz").geometry
        assert set(np.unique(mask.array)) <= {0, 1} and mask.array.any()
    assert bench.main(data + ["--labels", "--builtin"]) == 2
    assert "--labels writes the stacks' masks beside --stacks-only's images" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "stacks" / "images").iterdir()) == ["patient01_5mm.nii.gz", "patient02_5mm.nii.gz"]
    np.testing.assert_array_equal(read_image(tmp_path / "stacks" / "images" / "patient01_5mm.nii.gz").array,
                                  read_image(tmp_path / "work" / "images" / "patient01_5mm.nii.gz").array)

    foreign = tmp_path / "foreign"
    for name in ("patient01_5mm", "patient02_5mm"):
        mask = read_image(tmp_path / "work" / "predictions" / f"{name}.nii.gz")
        write_image((mask.array > 0).astype(np.uint8) * 255, mask.geometry, foreign / f"{name}.nii.gz")
    assert bench.main(data + ["--predictions", str(foreign)]) == 0
    scored = capsys.readouterr().out
    assert f"masks of another tool: {foreign}" in scored
    assert [r for r in scored.splitlines() if r.startswith("| patient")] == rows
    assert bench.main(data + ["--predictions", str(foreign), "--errors", "1"]) == 0  # the stacks' images found anew
    assert "| patient01_5mm | false positive | 62 |" in capsys.readouterr().out

    mask = read_image(foreign / "patient02_5mm.nii.gz")
    off_grid = Geometry(mask.geometry.size, (2.0, 2.0, 5.0), mask.geometry.origin, mask.geometry.direction)
    write_image(mask.array, off_grid, foreign / "patient02_5mm.nii.gz")
    assert bench.main(data + ["--predictions", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert "patient02_5mm.nii.gz" in err and "not on the grid of stack patient02_5mm" in err and "spacing" in err
    (foreign / "patient02_5mm.nii.gz").unlink()
    assert bench.main(data + ["--predictions", str(foreign)]) == 1
    assert "no mask: " in capsys.readouterr().err
    assert bench.main(data + ["--predictions", str(foreign), "--builtin"]) == 2
    assert "uses no DeepWML model: leave out --builtin" in capsys.readouterr().err
    assert bench.main(data + ["--stacks-only"]) == 2
    assert "give one" in capsys.readouterr().err
    assert bench.main(data + ["--stacks-only", "--work", str(tmp_path / "s2"), "--add-head", "--contrast"]) == 2
    assert "--contrast measures skull-stripped stacks" in capsys.readouterr().err
    assert bench.main(data + ["--stacks-only", "--work", str(tmp_path / "s3"), "--conspicuity"]) == 2
    assert "leave out --errors, --components and --conspicuity" in capsys.readouterr().err
    assert bench.main(data + ["--stacks-only", "--work", str(tmp_path / "s4"), "--min-lesion-contrast", "1.2"]) == 2
    assert "leave out --min-lesion-contrast" in capsys.readouterr().err
    probabilities = read_image(tmp_path / "stacks" / "images" / "patient01_5mm.nii.gz")
    write_image(probabilities.array / (probabilities.array.max() + 1), probabilities.geometry, foreign / "patient01_5mm.nii.gz")
    assert bench.main(data + ["--predictions", str(foreign)]) == 2
    assert "patient01_5mm.nii.gz" in capsys.readouterr().err  # a probability map is not a mask: named, refused


def test_field_pads_each_scan_to_a_square_field_of_view_keeping_every_voxel_where_it_is(tmp_path, capsys):
    """--field 80: the 64 x 64 mm made-up scans become 80 x 80 mm stacks, the padding background (air noise with
    --add-head), the brain and lesion voxels at the same world positions, and the figures those of the unpadded run."""
    out, rows = _run_on_made_up_scans(tmp_path, capsys, "--thickness", "5")
    bench = _benchmark()
    data = ["--data", str(tmp_path / "data"), "-m", str(tmp_path / "results" / "Dataset998_Toy" / "toy"), "--thickness", "5",
            "--device", "cpu"]
    assert bench.main(data + ["--field", "80", "--work", str(tmp_path / "padded")]) == 0
    padded_out = capsys.readouterr().out
    assert "padded to a 80 mm square field" in padded_out
    plain = read_image(tmp_path / "work" / "images" / "patient01_5mm.nii.gz")
    padded = read_image(tmp_path / "padded" / "images" / "patient01_5mm.nii.gz")
    assert padded.geometry.size == (80, 80, 6) and padded.geometry.spacing == plain.geometry.spacing
    # index (i, j) of the plain stack is index (i + 8, j + 8) of the padded one, at the same world position
    np.testing.assert_allclose(padded.geometry.index_to_world((8, 8, 0)), plain.geometry.index_to_world((0, 0, 0)), atol=1e-4)
    np.testing.assert_array_equal(padded.array[:, 8:72, 8:72], plain.array)
    assert (padded.array[:, :8, :] == 0).all()
    padded_rows = [r for r in padded_out.splitlines() if r.startswith("| patient")]
    dice = lambda table: [float(r.split("|")[7]) for r in table]  # noqa: E731
    np.testing.assert_allclose(dice(padded_rows), dice(rows), atol=0.05)  # a threshold model: the same lesions, resampled otherwise

    scans = bench.find_scans(tmp_path / "data")
    headed = bench.make_stacks(scans[:1], {5.0: bench.SlabSpec(5.0)}, tmp_path / "headed", add_head=True, field=80)[0]
    image = read_image(tmp_path / "headed" / f"{headed.case_id}.nii.gz").array
    assert image.shape == (6, 80, 80) and 0 < float(np.median(image[:, :4, :4])) < 10  # air noise, not zeros
    assert abs(bench.normal_brain_median(headed, image) - 100.0) < 5


def test_site_makes_the_stacks_as_a_held_back_site_acquires_its_scans(tmp_path, capsys):
    """--site ms: skull and scalp, 0.9 mm, nodded 12 degrees, 6.5 and 8 mm in a 230 mm field (256 x 256); --site svd:
    stripped, 0.47 mm, 7.5 and 8 mm in 240 mm; an option the site sets, given as well, is refused."""
    _made_up_scans(tmp_path)
    bench = _benchmark()
    parser = bench.build_parser()
    args = parser.parse_args(["--site", "svd"])
    bench.apply_site(args, parser.parse_args([]))
    assert (args.add_head, args.tilt, args.inplane, args.thickness, args.field) == (False, 0.0, 0.47, [7.5, 8.0], 240.0)
    data = ["--data", str(tmp_path / "data")]
    assert bench.main(data + ["--site", "ms", "--stacks-only", "--work", str(tmp_path / "ms")]) == 0
    out = capsys.readouterr().out
    assert "stacks (--site ms): axial slabs of 6.5, 8 mm" in out and "nodded 12 degrees" in out and "230 mm square field" in out
    stack = read_image(tmp_path / "ms" / "images" / "patient01_6p5mm.nii.gz")
    assert stack.geometry.size[:2] == (256, 256) and np.allclose(stack.geometry.spacing[:2], 0.9, atol=0.01)
    assert float(np.median(stack.array[:, :4, :4])) > 0  # air noise around a synthetic head
    assert sorted(p.name for p in (tmp_path / "ms" / "images").iterdir()) == [
        "patient01_6p5mm.nii.gz", "patient01_8mm.nii.gz", "patient02_6p5mm.nii.gz", "patient02_8mm.nii.gz"]
    assert bench.main(data + ["--site", "ms", "--tilt", "5", "--stacks-only", "--work", str(tmp_path / "x")]) == 2
    assert "--site ms sets --tilt: leave it out" in capsys.readouterr().err


def test_conspicuity_tabulates_the_reference_lesions_and_min_lesion_contrast_reaches_deepwml_predict(tmp_path, capsys):
    """--conspicuity: the reference lesions found by volume and contrast to their ring (benchmarks/lesion_conspicuity.py);
    --min-lesion-contrast is deepwml_predict's filter, said in the stack line: a bright lesion passes 1.2, and a
    filter above any lesion's contrast leaves nothing."""
    out, rows = _run_on_made_up_scans(tmp_path, capsys, "--thickness", "5", "--conspicuity", "--min-lesion-contrast", "1.2")
    assert "; --min-lesion-contrast 1.2" in out
    assert "| reference lesions, µl | contrast 0–1.05: recall (n)" in out
    all_row = next(line for line in out.splitlines() if line.startswith("| all |"))
    assert all_row.split("|")[-3].strip() == "1.00 (2)"  # one bright lesion per scan, both found
    assert all(float(r.split("|")[7]) > 0.5 for r in rows)
    _, rows = _run_on_made_up_scans(tmp_path / "high", capsys, "--thickness", "5", "--min-lesion-contrast", "2.9")
    assert all(float(r.split("|")[7]) == 0 for r in rows)
