"""VPT trainer: visual prompt tuning of CLIP's image encoder ("Visual Prompt Tuning",
arXiv 2203.12119), the vision-only baseline of the MaPLe paper (arXiv 2210.03117).

Default recipe (deep VPT, as released with MaPLe's code): 8 tokens in each of the 12 vision
blocks, frozen text prompts "a photo of a <class>.", SGD lr 0.0025, batch 4, 5 epochs, one
warm-up epoch at 1e-5. `TRAINER.VPT.PROMPT_DEPTH_VISION 1` (recipe `vit_b16_c2_ep5_batch4_shallow`)
gives shallow VPT. Checkpoints of the original code (`prompt_learner/`, the whole model with
`image_encoder.VPT` and `...resblocks.<block>.VPT_shallow`) load for evaluation.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.methods.vpt import VisionPromptedCLIP, VisionPromptLearner

from .base import TrainerBase, register
from .checkpoint import CheckpointLayout
from .ivlp import FROZEN_MODEL_PREFIXES, VISION_PROMPT_RENAMES, VISION_PROMPT_STACKS

VPT_LAYOUT = CheckpointLayout(
    renames=VISION_PROMPT_RENAMES, stacks=VISION_PROMPT_STACKS, frozen_prefixes=FROZEN_MODEL_PREFIXES
)


def _node() -> CN:
    node = CN()
    # Vision prompt tokens per block.
    node.N_CTX_VISION = 8
    # Words before the class name in the frozen text prompts ("a photo of a <class>.").
    node.CTX_INIT = "a photo of a"
    # Precision on GPU: "fp32", or "amp"/"fp16" for autocast over fp32 weights.
    node.PREC = "fp16"
    # Vision blocks, counted from the first, that get prompts: 12 for deep VPT at ViT-B/16, 1 for shallow.
    node.PROMPT_DEPTH_VISION = 12
    return node


register_trainer_node("VPT", _node)


@register("VPT")
class VPT(TrainerBase):
    """Visual prompt tuning against frozen hand-written class prompts."""

    default_recipe = "vit_b16_c2_ep5_batch4_4"
    original_checkpoint_layout = VPT_LAYOUT

    def build_model(self) -> None:
        node = self.node
        prompt_learner = VisionPromptLearner(self.backbone, n_ctx=node.N_CTX_VISION, depth=node.PROMPT_DEPTH_VISION)
        self.model = VisionPromptedCLIP(self.backbone, prompt_learner, self.dm.classnames, node.CTX_INIT)
        optim, sched = self.build_optimizer(prompt_learner.parameters())
        self.register_model("prompt_learner", prompt_learner, optim, sched)
