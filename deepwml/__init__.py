"""DeepWML: white-matter-lesion segmentation on routine clinical 2D FLAIR."""

__version__ = "0.1.0"
