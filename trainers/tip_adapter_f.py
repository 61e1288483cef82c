"""Tip-Adapter-F trainer (Zhang et al., "Tip-Adapter: Training-free Adaption of CLIP for Few-shot
Classification", ECCV 2022, arXiv 2207.09519): Tip-Adapter with trained cache keys.

The keys start from Tip-Adapter's cache and train with AdamW (lr 0.001, eps 1e-4), a cosine over
all iterations, batch 256 and 20 epochs (100 for EuroSAT). During training alpha and beta stay at
the released configs' initial values, or at the training-free search result for datasets whose
config was not published.
Each epoch trains on one cached augmented pass over the training images (views AUGMENT_EPOCH
onwards, so they differ from the passes averaged into the keys), so the image encoder does not
run while training. The epoch is chosen on the validation split with TEST.FINAL_MODEL best_val,
where the released code picks it on test. Alpha and beta are then searched on validation for
that epoch's keys and stored in its checkpoint.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.methods.tip_adapter import INIT_BETA_ALPHA

from .base import register
from .feature_cache import feature_loader, item_labels
from .optim import IterationLRScheduler, build_optimizer, iterations_per_epoch
from .tip_adapter import TipAdapter, tip_adapter_node

logger = logging.getLogger(__name__)


def _node() -> CN:
    node = tip_adapter_node()
    # beta while training; negative means the released config's value for the dataset, else the searched one.
    node.INIT_BETA = -1.0
    # alpha while training; negative means the released config's value for the dataset, else the searched one.
    node.INIT_ALPHA = -1.0
    return node


register_trainer_node("Tip-Adapter-F", _node)


@register("Tip-Adapter-F")
class TipAdapterF(TipAdapter):
    """Tip-Adapter whose cache keys are fine-tuned; the epoch, alpha and beta are chosen on val."""

    default_recipe = "vit_b16"
    dataset_recipe = "vit_b16_{dataset}"
    dataset_specific_keys = ("OPTIM.MAX_EPOCH",)
    trains = True

    def build_model(self) -> None:
        self.model = self.build_tip_model(trainable_keys=True)
        cache_model = self.model.cache_model
        batches_per_epoch = iterations_per_epoch(len(self.dm.dataset.train_x), int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE))
        optim = build_optimizer(cache_model.parameters(), self.cfg.OPTIM)
        sched = IterationLRScheduler(optim, self.cfg.OPTIM, self.max_epoch * batches_per_epoch)
        self.register_model("cache_model", cache_model, optim, sched)

    def before_train(self) -> None:
        if self.start_epoch == 0:  # a resumed run keeps its trained keys
            self.build_cache_keys()
        dataset = type(self.dm.dataset).__name__
        beta, alpha = float(self.node.INIT_BETA), float(self.node.INIT_ALPHA)
        if beta < 0 or alpha < 0:
            if dataset in INIT_BETA_ALPHA:
                beta, alpha = INIT_BETA_ALPHA[dataset]
            else:
                logger.info("%s has no published Tip-Adapter-F initial beta and alpha; training with the searched ones", dataset)
                self.search_beta_alpha()
                beta, alpha = float(self.model.cache_model.beta), float(self.model.cache_model.alpha)
        self.model.cache_model.set_beta_alpha(beta, alpha)
        logger.info("%s trains with beta %.4f, alpha %.4f", self.name, beta, alpha)

    def epoch_loader(self) -> DataLoader:
        """Return a shuffled loader over this epoch's cached augmented view."""
        view = int(self.node.AUGMENT_EPOCH) + self.epoch
        features = self.feature_cache.view_features(self.dm, view, int(self.cfg.SEED))
        labels = item_labels(self.dm.dataset.train_x)
        return feature_loader(features, labels, int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE), self.dm.train_generator)

    def compute_loss(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy of the Tip-Adapter logits; `inputs` are cached features `(B, D)` or images."""
        if inputs.dim() != 2:
            with torch.no_grad():
                inputs = self.backbone.encode_image(inputs)
        logits = self.model.logits_from_features(inputs)
        return F.cross_entropy(logits, labels), logits

    def after_train(self) -> None:
        """Search alpha and beta on val for the chosen epoch's keys and store them in its checkpoint."""
        best = self.cfg.TEST.FINAL_MODEL == "best_val" and self.best_val is not None
        epoch = self.load_model(self.output_dir) if best else self.max_epoch
        self.search_beta_alpha()
        self.save_model(epoch, best=best)
