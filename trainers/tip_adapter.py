"""Tip-Adapter trainer (Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for Few-shot
Classification", ECCV 2022, arXiv 2207.09519): training-free.

`fit()` builds the cache from AUGMENT_EPOCH augmented passes over the training images (cached
views, shared with Tip-Adapter-F) and grid-searches alpha and beta on the few-shot validation
split. Nothing is trained; the cache (keys and one-hot values) is reported as `stored_params`.
On classes the cache does not hold (base-to-new "new") the logits are the zero-shot ones.
"""

from __future__ import annotations

import logging

import torch.nn.functional as F
from yacs.config import CfgNode as CN

from perlclip.config import node_name, register_trainer_node
from perlclip.methods.tip_adapter import (
    DEFAULT_SEARCH_SCALE,
    SEARCH_SCALES,
    CacheModel,
    TipAdapterModel,
    search_beta_alpha,
    search_grid,
)
from perlclip.methods.zeroshot import build_text_classifier

from .base import TrainerBase, register
from .feature_cache import item_labels
from .zeroshot_clip import dataset_templates

logger = logging.getLogger(__name__)


def tip_adapter_node() -> CN:
    """Return the `TRAINER.TIP_ADAPTER` defaults (Tip-Adapter-F adds its own keys to a copy)."""
    node = CN()
    # Augmented passes over the training images whose features are averaged into the cache keys.
    node.AUGMENT_EPOCH = 10
    # Search maxima (beta_max, alpha_max); empty means the dataset's published range, else (7, 3).
    node.SEARCH_SCALE = ()
    # Grid points of the search (beta steps, alpha steps).
    node.SEARCH_STEP = (200, 20)
    # Precision on GPU: "fp32", or "amp"/"fp16" for autocast over fp32 weights.
    node.PREC = "fp32"
    return node


register_trainer_node("Tip-Adapter", tip_adapter_node)


@register("Tip-Adapter")
class TipAdapter(TrainerBase):
    """A cache of few-shot image features added to zero-shot CLIP; alpha and beta chosen on val."""

    default_recipe = "vit_b16"
    trains = False
    frozen_image_encoder = True

    def build_model(self) -> None:
        self.model = self.build_tip_model(trainable_keys=False)
        self.register_model("cache_model", self.model.cache_model)

    def build_tip_model(self, trainable_keys: bool) -> TipAdapterModel:
        """Build the model with an empty cache of one key per training item (filled by `build_cache_keys`)."""
        dataset = self.dm.dataset
        # NOTE: the released code uses a prompt ensemble for ImageNet whose list was not checked
        # here, so CoOp's 7-template ensemble is used in its place.
        templates = dataset_templates(dataset, ensemble=type(dataset).__name__ == "ImageNet")
        text_features = build_text_classifier(self.backbone, self.dm.classnames, templates)
        labels = item_labels(dataset.train_x)
        cache_model = CacheModel(self.backbone.embed_dim, labels, self.dm.classnames, trainable_keys=trainable_keys)
        return TipAdapterModel(self.backbone, text_features, cache_model)

    def stored_params(self) -> int:
        return self.model.cache_model.stored_numel()

    def fit(self) -> None:
        self.build_cache_keys()
        self.search_beta_alpha()

    def build_cache_keys(self) -> None:
        """Set the keys to the normalised mean of the training features over the augmented views."""
        views = int(self.node.AUGMENT_EPOCH)
        if views < 1:
            raise ValueError(f"TRAINER.{node_name(self.name)}.AUGMENT_EPOCH must be >= 1, got {views}")
        total = None
        for view in range(views):
            features = self.feature_cache.view_features(self.dm, view, int(self.cfg.SEED))
            total = features if total is None else total + features
        keys = F.normalize(total / views, dim=-1)
        self.model.cache_model.set_keys(keys.to(self.device))

    def search_beta_alpha(self) -> None:
        """Grid-search beta and alpha on the validation features and store them in the cache model."""
        if not self.dm.dataset.val:
            raise ValueError(
                f"{self.name} chooses alpha and beta on the validation split, but {type(self.dm.dataset).__name__} "
                f"has no validation images in this setting; use --shots K >= 1"
            )
        features, labels = self.feature_cache.split_features(self.dm, "val")
        beta_max, alpha_max = self.search_scale()
        beta_steps, alpha_steps = (int(v) for v in self.node.SEARCH_STEP)
        self.set_model_mode("eval")
        beta, alpha, accuracy = search_beta_alpha(
            self.model, features.to(self.device), labels, search_grid(beta_max, beta_steps), search_grid(alpha_max, alpha_steps)
        )
        self.model.cache_model.set_beta_alpha(beta, alpha)
        logger.info("%s: beta %.4f, alpha %.4f chosen on the val split (val accuracy %.2f%%)", self.name, beta, alpha, accuracy)

    def search_scale(self) -> tuple[float, float]:
        """Return (beta_max, alpha_max): SEARCH_SCALE, else the dataset's published range."""
        scale = tuple(float(v) for v in self.node.SEARCH_SCALE)
        if scale:
            if len(scale) != 2:
                raise ValueError(f"TRAINER.{node_name(self.name)}.SEARCH_SCALE must hold (beta_max, alpha_max), got {scale}")
            return scale
        dataset = type(self.dm.dataset).__name__
        if dataset not in SEARCH_SCALES:
            logger.info("%s has no published Tip-Adapter search range; using %s", dataset, DEFAULT_SEARCH_SCALE)
        return SEARCH_SCALES.get(dataset, DEFAULT_SEARCH_SCALE)
