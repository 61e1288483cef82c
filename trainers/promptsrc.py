"""PromptSRC trainer ("Self-regulating Prompts: Foundational Model Adaptation without Forgetting",
arXiv 2307.06948).

IVLP's prompts (trainers/ivlp.py) trained with the self-regulating losses and Gaussian prompt
aggregation of methods/promptsrc.py. All recipes use SGD lr 0.0025, batch 4 and 4 + 4 tokens:

- base-to-new (the default): 20 epochs, GPA mean 15 and std 1;
- cross-dataset: prompts in 3 blocks, GPA mean 6 and std 10;
- few-shot: 50 epochs, GPA mean 30 and std 30 for ImageNet, Caltech101, OxfordPets, Food101,
  UCF101 and SUN397, or mean 45 and std 5 for StanfordCars, Flowers, FGVCAircraft, DTD and EuroSAT.

After the last epoch the prompts are replaced by their GPA sum, and that is the model the final
checkpoint holds, as in the released code. The running sum is saved next to the checkpoints
(`gpa_state.pth`), so `--resume` continues it. Checkpoints of the original code
(`VLPromptLearner/`) load as IVLP's do.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.methods.promptsrc import (
    GaussianPromptAggregation,
    gaussian_epoch_weights,
    self_regulating_losses,
)
from perlclip.methods.zeroshot import PROMPTSRC_TEMPLATES, build_prompt_group_classifier, clean_classname

from .base import register
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .ivlp import IVLP, ivlp_node

logger = logging.getLogger(__name__)

# File of the running GPA sum, next to the checkpoint folders.
GPA_STATE_FILE = "gpa_state.pth"


def _node() -> CN:
    node = ivlp_node()
    # Weight of the L1 distance between prompted and frozen class features.
    node.TEXT_LOSS_WEIGHT = 25.0
    # Weight of the L1 distance between prompted and frozen image features.
    node.IMAGE_LOSS_WEIGHT = 10.0
    # Mean (in epochs, 1-based) of the Gaussian weights of prompt aggregation.
    node.GPA_MEAN = 15.0
    # Standard deviation (in epochs) of the Gaussian weights of prompt aggregation.
    node.GPA_STD = 1.0
    return node


register_trainer_node("PromptSRC", _node)


@register("PromptSRC")
class PromptSRC(IVLP):
    """IVLP prompts regularised towards frozen CLIP, aggregated over epochs."""

    default_recipe = "vit_b16_c2_ep20_batch4_4+4ctx"

    def build_model(self) -> None:
        super().build_model()
        self.gpa = GaussianPromptAggregation(gaussian_epoch_weights(self.max_epoch, self.node.GPA_MEAN, self.node.GPA_STD))

    @cached_property
    def frozen_text_features(self) -> Tensor:
        """Frozen CLIP's class features: raw features averaged over the 60 templates, normalised."""
        groups = [[template.format(clean_classname(name)) for template in PROMPTSRC_TEMPLATES] for name in self.dm.classnames]
        return build_prompt_group_classifier(self.backbone, groups, normalize_each=False)

    def compute_loss(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.backbone.logit_scale
        text_features = self.model.text_features()
        image_features = F.normalize(self.model.encode_images(images), dim=-1)
        logits = scale * image_features @ text_features.t()
        with torch.no_grad():
            frozen_image = F.normalize(self.backbone.encode_image(images), dim=-1)
            frozen_text = self.frozen_text_features.to(frozen_image.dtype)
            zero_shot_logits = scale * frozen_image @ frozen_text.t()
        terms = self_regulating_losses(
            text_features, frozen_text, image_features, frozen_image, logits, zero_shot_logits,
            self.node.TEXT_LOSS_WEIGHT, self.node.IMAGE_LOSS_WEIGHT,
        )
        return F.cross_entropy(logits, labels) + sum(terms.values()), logits

    def _prompt_params(self) -> dict[str, torch.nn.Parameter]:
        module = self.model.prompt_learner
        return {name: param for name, param in module.named_parameters() if param.requires_grad}

    def after_epoch(self) -> None:
        """Add this epoch's prompts to the GPA sum; after the last epoch, use the sum."""
        self.gpa.add(self.epoch, self._prompt_params())
        if self.epoch + 1 == self.max_epoch:
            aggregated = self.gpa.result()
            with torch.no_grad():
                for name, param in self._prompt_params().items():
                    param.copy_(aggregated[name])
            logger.info("PromptSRC: prompts replaced by their Gaussian aggregate over %d epochs", self.max_epoch)

    def save_model(self, epoch: int, best: bool = False) -> None:
        super().save_model(epoch, best)
        if not best:
            save_checkpoint(self.output_dir / GPA_STATE_FILE, {"epoch": epoch, **self.gpa.state_dict()})

    def resume(self, directory: Path | None = None) -> int:
        epoch = super().resume(directory)
        path = Path(directory if directory is not None else self.output_dir) / GPA_STATE_FILE
        if epoch and path.is_file():
            state = load_checkpoint(path, map_location=self.device)
            if int(state["epoch"]) != epoch:
                raise CheckpointError(f"{path} contains the GPA sum of epoch {state['epoch']}, not of the resumed epoch {epoch}")
            self.gpa.load_state_dict(state)
        elif epoch:
            raise CheckpointError(f"Cannot resume PromptSRC at epoch {epoch}: the GPA sum {path} is missing")
        return epoch
