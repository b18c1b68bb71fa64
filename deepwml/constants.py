"""Constants shared by every stage."""

#: Value that marks ignored pixels in the preprocessed cache, whatever the raw dataset declared.
IGNORE_LABEL = 255

#: The paper's lesion-volume groups (ml per slice): upper bounds of G1..G4; G5 is everything above.
LV_GROUP_BOUNDS_ML = (0.2, 0.7, 2.0, 5.0)
LV_GROUP_NAMES = ("G1", "G2", "G3", "G4", "G5")

#: Diseases a dataset.json may name.
DISEASES = ("MS", "NMOSD", "CSVD", "other")

#: Image file endings DeepWML reads (besides DICOM series folders).
IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".mgz", ".mgh")

#: deepwml_predict's default bound for lesions the anatomy map places in or against the cortex: at least this many times the
#: cortex's median intensity (deepwml.inference.cortex_contrast), and the largest bound it accepts
MIN_CORTEX_CONTRAST = 1.15
MAX_CORTEX_CONTRAST = 3.0
