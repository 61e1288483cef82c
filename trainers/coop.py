"""CoOp trainer (Zhou et al., "Learning to Prompt for Vision-Language Models", arXiv 2109.01134).

The default recipe is CoOp's 16-shot one: 16 random context vectors shared by all classes, class
token at the end, SGD lr 0.002, batch 32, 200 epochs, one warm-up epoch at 1e-5. Checkpoints of
the original CoOp code (`prompt_learner/model.pth.tar-N`) load for evaluation with
`--eval-only --model-dir DIR --load-epoch N`; their class-dependent `token_prefix` and
`token_suffix` entries are rebuilt from the evaluation's classes, as CoOp itself does.
"""

from __future__ import annotations

from yacs.config import CfgNode as CN

from perlclip.config import register_trainer_node
from perlclip.methods.coop import PromptedCLIP, PromptLearner

from .base import TrainerBase, register


def _node() -> CN:
    node = CN()
    # Number of context vectors (ignored when CTX_INIT is set: the word count is used).
    node.N_CTX = 16
    # Class-specific context: one set of context vectors per class.
    node.CSC = False
    # Initial context words (e.g. "a photo of a"); empty draws them from N(0, 0.02).
    node.CTX_INIT = ""
    # Precision on GPU: "fp32", or "amp"/"fp16" for autocast over fp32 weights.
    node.PREC = "fp16"
    # Where the class name goes relative to the context: "end", "middle" or "front".
    node.CLASS_TOKEN_POSITION = "end"
    return node


register_trainer_node("CoOp", _node)


@register("CoOp")
class CoOp(TrainerBase):
    """Context Optimization: learned prompt context, frozen CLIP."""

    default_recipe = "vit_b16_ep200"
    class_dependent_keys = ("token_prefix", "token_suffix")
    frozen_image_encoder = True

    def build_model(self) -> None:
        node = self.node
        prompt_learner = PromptLearner(
            self.backbone,
            self.dm.classnames,
            n_ctx=node.N_CTX,
            ctx_init=node.CTX_INIT,
            csc=node.CSC,
            class_token_position=node.CLASS_TOKEN_POSITION,
        )
        self.model = PromptedCLIP(self.backbone, prompt_learner)
        optim, sched = self.build_optimizer(prompt_learner.parameters())
        self.register_model("prompt_learner", prompt_learner, optim, sched)
