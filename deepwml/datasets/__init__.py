"""Raw dataset format: DatasetNNN_Name/{imagesTr,labelsTr,imagesTs,labelsTs}/CASE<ending> + dataset.json."""
from deepwml.datasets.dataset_json import CaseMeta, DatasetJson, case_id_problem
from deepwml.datasets.raw_dataset import Case, RawDataset, dataset_folder_name, find_dataset_folder

__all__ = ["Case", "CaseMeta", "DatasetJson", "RawDataset", "case_id_problem", "dataset_folder_name", "find_dataset_folder"]
