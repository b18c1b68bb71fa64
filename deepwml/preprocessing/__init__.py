"""Preprocessing: the forward transform prediction reuses, its exact inverse, and the training cache."""
from deepwml.preprocessing.cache import load_case, load_head, load_props, unpack_case
from deepwml.preprocessing.transforms import preprocess_case, revert_to_original

__all__ = ["load_case", "load_head", "load_props", "preprocess_case", "revert_to_original", "unpack_case"]
