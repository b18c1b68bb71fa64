"""Anatomy from the FLAIR alone (issue #14): the label map the anatomy model predicts, lesion locations, Fazekas."""
