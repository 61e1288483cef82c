"""EuroSAT (RGB), 10 land-cover classes of Sentinel-2 patches, in CoOp's split.

The split file stores CoOp's descriptive class names (AnnualCrop -> "Annual Crop Land",
SeaLake -> "Sea or Lake", Highway -> "Highway or Road", ...).
"""

from __future__ import annotations

from .base import DATASETS, DatasetBase


@DATASETS.register("EuroSAT", aliases=("eurosat",))
class EuroSAT(DatasetBase):
    """`eurosat/2750/<Class>/<Class>_N.jpg` with `eurosat/split_zhou_EuroSAT.json`."""

    dataset_dir = "eurosat"
    image_dir = "2750"
    split_file = "split_zhou_EuroSAT.json"
    image_source = "EuroSAT.zip, the RGB version that extracts to 2750/, from https://github.com/phelber/EuroSAT"
    template = "a centered satellite photo of {}."
    published_sizes = (13500, 5400, 8100)
    published_classes = 10
