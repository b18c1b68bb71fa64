"""Multi-centre synthetic 2D FLAIR: procedural anatomy, lesions by disease, scanner profiles of the paper's Table 1."""
from deepwml.synthetic.centres import CENTRES, Centre, select_centres
from deepwml.synthetic.dataset import CaseSpec, generate_dataset, make_case, plan_cases
from deepwml.synthetic.generate import SyntheticCase, generate_case

__all__ = [
    "CENTRES",
    "CaseSpec",
    "Centre",
    "SyntheticCase",
    "generate_case",
    "generate_dataset",
    "make_case",
    "plan_cases",
    "select_centres",
]
