"""TaskRes trainer (Yu et al., "Task Residual for Tuning Vision-Language Models", CVPR 2023,
arXiv 2211.10277).

The residual on the zero-shot text classifier (methods/taskres.py) trains on frozen features of
augmented training images; validation and test run on cached features. Recipe: Adam lr 0.002
(0.0002 for ImageNet), batch 256, 200 epochs, residual scale 0.5 (1.0 for OxfordFlowers). On
classes without a trained residual (base-to-new "new") the logits are the zero-shot ones.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.methods.taskres import TaskResLearner, TaskResModel, raw_text_features
from perlclip.methods.zeroshot import ENSEMBLE_TEMPLATES

from .base import TrainerBase, register


def _node() -> CN:
    node = CN()
    # alpha in t' = t + alpha * x (the released code's RESIDUAL_SCALE; 1.0 for OxfordFlowers).
    node.RESIDUAL_SCALE = 0.5
    # Precision on GPU: "fp32", or "amp"/"fp16" for autocast over fp32 weights.
    node.PREC = "amp"
    return node


register_trainer_node("TaskRes", _node)


@register("TaskRes")
class TaskRes(TrainerBase):
    """A learned residual on the frozen zero-shot text classifier."""

    default_recipe = "vit_b16"
    dataset_recipe = "vit_b16_{dataset}"
    dataset_specific_keys = ("OPTIM.LR", "TRAINER.TASKRES.RESIDUAL_SCALE")
    frozen_image_encoder = True

    def build_model(self) -> None:
        # The released code averages the 7 ensemble templates plus the dataset's own template for
        # ImageNet, and uses the dataset's template alone elsewhere.
        dataset = self.dm.dataset
        templates = [dataset.template]
        if type(dataset).__name__ == "ImageNet":
            templates = [*ENSEMBLE_TEMPLATES, dataset.template]
        base = raw_text_features(self.backbone, self.dm.classnames, templates)
        learner = TaskResLearner(base, self.dm.classnames, scale=float(self.node.RESIDUAL_SCALE))
        self.model = TaskResModel(self.backbone, learner)
        optim, sched = self.build_optimizer(learner.parameters())
        self.register_model("prompt_learner", learner, optim, sched)
