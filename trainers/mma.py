"""MMA trainer ("MMA: Multi-Modal Adapter for Vision-Language Models", CVPR 2024).

The default recipe `vit_b16_ep5` is the released base-to-new recipe: adapters in layers 5-12 of
both towers with bottleneck 32 and scale 0.001, text prompts "a photo of a <class>.", SGD lr
0.0015, batch 16, 5 epochs and no warm-up. `vit_b16_ep5_imnet` uses batch 128 for ImageNet. Checkpoints of
the original code (`adapter_learner/`) load unchanged; their class-prompt buffers are rebuilt.
The released config node is `TRAINER.MMADAPTER`; here it is `TRAINER.MMA` with the same keys.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.methods.mma import AdaptedCLIP, MultiModalAdapter

from .base import TrainerBase, register


def _node() -> CN:
    node = CN()
    # Words before the class name in the text prompts ("a photo of a <class>.").
    node.TEXT_CTX_INIT = "a photo of a"
    # First layer with adapters, 1-based.
    node.ADAPTER_START = 5
    # Last layer with adapters, 1-based (inclusive).
    node.ADAPTER_END = 12
    # Bottleneck width of the adapters.
    node.ADAPTER_DIM = 32
    # Factor applied to the adapters' output before it is added to the block output.
    node.ADAPTER_SCALE = 0.001
    # Precision on GPU: "fp32", or "amp"/"fp16" for autocast over fp32 weights.
    node.PREC = "amp"
    return node


register_trainer_node("MMA", _node)


@register("MMA")
class MMA(TrainerBase):
    """Multi-modal adapters in the upper layers of both towers, with a shared projection."""

    default_recipe = "vit_b16_ep5"
    class_dependent_keys = ("token_embedding", "tokenized_prompts")

    def build_model(self) -> None:
        node = self.node
        adapter_learner = MultiModalAdapter(
            self.backbone,
            self.dm.classnames,
            start=node.ADAPTER_START,
            end=node.ADAPTER_END,
            dim=node.ADAPTER_DIM,
            scale=node.ADAPTER_SCALE,
            ctx_init=node.TEXT_CTX_INIT,
        )
        self.model = AdaptedCLIP(self.backbone, adapter_learner)
        optim, sched = self.build_optimizer(adapter_learner.parameters())
        self.register_model("adapter_learner", adapter_learner, optim, sched)
