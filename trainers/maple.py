"""MaPLe trainer ("MaPLe: Multi-modal Prompt Learning", arXiv 2210.03117).

Default recipe (base-to-new and few-shot): 2 tokens from "a photo of a" in the first 9 blocks,
SGD lr 0.0035, batch 4, 5 epochs, one warm-up epoch at 1e-5. Cross-dataset: lr 0.0026, 2 epochs,
depth 3.

Checkpoints of the original code load for evaluation. Its trainer saves the whole model, frozen
CLIP included, in `MultiModalPromptLearner/model.pth.tar-N` under keys such as
`prompt_learner.ctx`, `prompt_learner.compound_prompts_text.0` and
`prompt_learner.compound_prompt_projections.0.weight`. `MAPLE_LAYOUT` maps them to this
trainer's keys and drops the frozen weights and the class-name buffers, so the class prompts
are rebuilt from the evaluation's classes.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.methods.deep_prompts import DeepPromptedCLIP
from perlclip.methods.maple import CoupledPromptLearner

from .base import TrainerBase, register
from .checkpoint import CheckpointLayout

MAPLE_LAYOUT = CheckpointLayout(
    renames=(
        (r"prompt_learner\.ctx", "ctx"),
        (r"prompt_learner\.proj\.(weight|bias)", r"proj.\1"),
        (r"prompt_learner\.compound_prompt_projections\.(\d+)\.(weight|bias)", r"deep_projections.\1.\2"),
    ),
    stacks=((r"prompt_learner\.compound_prompts_text\.(\d+)", "deep_text_ctx", 0),),
    frozen_prefixes=(
        "prompt_learner.token_prefix",
        "prompt_learner.token_suffix",
        "image_encoder.",
        "text_encoder.",
        "logit_scale",
    ),
)


def _node() -> CN:
    node = CN()
    # Prompt tokens per block; with CTX_INIT they replace its first N_CTX tokens ("a photo" of "a photo of a").
    node.N_CTX = 2
    # Initial context words; empty draws the first block's tokens from N(0, 0.02).
    node.CTX_INIT = "a photo of a"
    # Precision on GPU: "fp32", or "amp"/"fp16" for autocast over fp32 weights.
    node.PREC = "fp16"
    # Number J of blocks, counted from the first, that get prompts in both towers (1 = shallow).
    node.PROMPT_DEPTH = 9
    return node


register_trainer_node("MaPLe", _node)


@register("MaPLe")
class MaPLe(TrainerBase):
    """Multi-modal prompt learning: text prompts with vision prompts projected from them."""

    default_recipe = "vit_b16_c2_ep5_batch4_2ctx"
    class_dependent_keys = ("token_prefix", "token_suffix")
    original_checkpoint_layout = MAPLE_LAYOUT

    def build_model(self) -> None:
        node = self.node
        prompt_learner = CoupledPromptLearner(
            self.backbone, self.dm.classnames, n_ctx=node.N_CTX, ctx_init=node.CTX_INIT, depth=node.PROMPT_DEPTH,
            depth_key="TRAINER.MAPLE.PROMPT_DEPTH",
        )
        self.model = DeepPromptedCLIP(self.backbone, prompt_learner)
        optim, sched = self.build_optimizer(prompt_learner.parameters())
        self.register_model("MultiModalPromptLearner", prompt_learner, optim, sched)
