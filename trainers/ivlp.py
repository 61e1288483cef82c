"""IVLP trainer: independent vision-language prompting (the baseline of MaPLe, arXiv 2210.03117,
and the architecture of PromptSRC, arXiv 2307.06948).

Default recipe, the one released with PromptSRC's code: 4 text and 4 vision tokens in the first 9
blocks of each tower, text tokens from "a photo of a", SGD lr 0.0025, batch 4, 20 epochs, one
warm-up epoch at 1e-5.

Checkpoints of the original code load for evaluation: it saves the whole model in
`VLPromptLearner/model.pth.tar-N`, with the first text tokens in `prompt_learner.ctx`, the first
vision tokens in `image_encoder.VPT` and the deeper ones in
`{text,image}_encoder.transformer.resblocks.<block>.VPT_shallow`. `IVLP_LAYOUT` maps them to this
trainer's keys.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN

from perlclip.config import node_name, register_trainer_node
from perlclip.methods.deep_prompts import DeepPromptedCLIP
from perlclip.methods.ivlp import IndependentPromptLearner

from .base import TrainerBase, register
from .checkpoint import CheckpointLayout

# Vision prompts as the MaPLe-family codes save them (IVLP, PromptSRC and VPT).
VISION_PROMPT_RENAMES = ((r"image_encoder\.VPT", "vision_ctx"),)
VISION_PROMPT_STACKS = ((r"image_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow", "deep_vision_ctx", -1),)
FROZEN_MODEL_PREFIXES = ("image_encoder.", "text_encoder.", "logit_scale")

IVLP_LAYOUT = CheckpointLayout(
    renames=((r"prompt_learner\.ctx", "ctx"), *VISION_PROMPT_RENAMES),
    stacks=((r"text_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow", "deep_text_ctx", -1), *VISION_PROMPT_STACKS),
    frozen_prefixes=(
        "prompt_learner.token_prefix",
        "prompt_learner.token_suffix",
        "prompt_learner.ZS_image_encoder.",
        *FROZEN_MODEL_PREFIXES,
    ),
)


def ivlp_node() -> CN:
    """Return the IVLP keys, shared by `TRAINER.IVLP` and `TRAINER.PROMPTSRC`."""
    node = CN()
    # Vision prompt tokens per block.
    node.N_CTX_VISION = 4
    # Text prompt tokens per block; with CTX_INIT they replace its first N_CTX_TEXT tokens.
    node.N_CTX_TEXT = 4
    # Initial words of the first text block's tokens; empty draws them from N(0, 0.02).
    node.CTX_INIT = "a photo of a"
    # Precision on GPU: "fp32", or "amp"/"fp16" for autocast over fp32 weights.
    node.PREC = "fp16"
    # Vision blocks, counted from the first, that get prompts (0 = no vision prompts).
    node.PROMPT_DEPTH_VISION = 9
    # Text blocks, counted from the first, that get prompts (at least 1).
    node.PROMPT_DEPTH_TEXT = 9
    return node


register_trainer_node("IVLP", ivlp_node)


@register("IVLP")
class IVLP(TrainerBase):
    """Independent deep prompts in the text and vision towers."""

    default_recipe = "vit_b16_c2_ep20_batch4_4+4ctx"
    class_dependent_keys = ("token_prefix", "token_suffix")
    original_checkpoint_layout = IVLP_LAYOUT

    def build_model(self) -> None:
        node = self.node
        prompt_learner = IndependentPromptLearner(
            self.backbone,
            self.dm.classnames,
            n_ctx_text=node.N_CTX_TEXT,
            n_ctx_vision=node.N_CTX_VISION,
            depth_text=node.PROMPT_DEPTH_TEXT,
            depth_vision=node.PROMPT_DEPTH_VISION,
            ctx_init=node.CTX_INIT,
            key_prefix=f"TRAINER.{node_name(self.name)}",
        )
        self.model = DeepPromptedCLIP(self.backbone, prompt_learner)
        optim, sched = self.build_optimizer(prompt_learner.parameters())
        self.register_model("VLPromptLearner", prompt_learner, optim, sched)
