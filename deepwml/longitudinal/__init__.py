"""Lesion change between two FLAIR scans of one patient (baseline and follow-up): rigid registration of the
baseline onto the follow-up, then each follow-up lesion new, enlarging, stable or shrinking and each baseline lesion
persisting or resolved (deepwml_compare). Runs after the predictor, on its masks or on masks the user gives."""
