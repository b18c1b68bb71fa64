"""benchmarks/finetune_folds.py: the manifest it hands deepwml_finetune is one a site would write, and the command
takes it."""
from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from deepwml.datasets.manifest import read_manifest
from deepwml_testing.benchmarks import load_benchmark


def test_the_site_manifest_lists_every_training_scan_with_its_mask_and_centre(tmp_path):
    ff = load_benchmark("finetune_folds")
    raw = tmp_path / "raw" / "Dataset520_SiteFinetune"
    for folder in ("imagesTr", "labelsTr"):
        (raw / folder).mkdir(parents=True)
        for k in range(2):
            sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 8, 8), np.uint8)), str(raw / folder / f"MS2_{k:03d}.nii.gz"))
    (raw / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    cases = read_manifest(ff.site_manifest(raw, "MS#2"))
    assert [c.case_id for c in cases] == ["MS2_000", "MS2_001"] and all(c.split == "Tr" for c in cases)
    assert [c.image.name for c in cases] == ["MS2_000.nii.gz", "MS2_001.nii.gz"]
    assert {(c.meta.centre, c.meta.disease) for c in cases} == {("MS#2", "MS")}
