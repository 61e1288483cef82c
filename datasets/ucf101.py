"""UCF101 action recognition, as the middle frame of each video, in CoOp's split.

The split file stores the CamelCase action names split at capitals and joined by `_`
(`ApplyEyeMakeup` -> `Apply_Eye_Makeup`); trainers turn `_` into spaces.
"""

from __future__ import annotations

from .base import DATASETS, DatasetBase


@DATASETS.register("UCF101", aliases=("ucf101",))
class UCF101(DatasetBase):
    """`ucf101/UCF-101-midframes/<Class>/<video>.jpg` with `ucf101/split_zhou_UCF101.json`."""

    dataset_dir = "ucf101"
    image_dir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    image_source = "UCF-101-midframes.zip, the middle frame of each UCF101 video, linked in the CoOp repository's DATASETS.md"
    template = "a photo of a person doing {}."
    published_sizes = (7639, 1898, 3783)
    published_classes = 101
