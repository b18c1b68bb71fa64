"""Delivering results to where readers work: DeepWML's DICOM outputs sent to a PACS or DICOM node (C-STORE)."""
