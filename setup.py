"""Setuptools entry; metadata lives in setup.cfg.

The shipped plan presets live in the top-level ``plans/`` folder (where users look for them) and are
installed as the package ``deepwml.presets`` so that a non-editable install finds them too.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["deepwml", "deepwml.*"]) + ["deepwml.presets"],
    package_dir={"deepwml.presets": "plans"},
    package_data={
        "deepwml.presets": ["*.json"],
        "deepwml.pretrained": ["*/*.json", "*/*.md", "*/fold_*/*.pth"],
        "deepwml.synthetic": ["template/*.npz", "template/*.md"],
    },
)
