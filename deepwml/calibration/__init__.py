"""Calibrating a trained lesion model's probabilities (temperature scaling, ``deepwml_calibrate``)."""
