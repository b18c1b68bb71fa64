"""Shipped plan presets (JSON files beside this one), installed as ``deepwml.presets``."""
