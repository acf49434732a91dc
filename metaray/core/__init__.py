"""Pure PyTorch: soft prompts, the inner loop, heads and outer pseudo-gradients.

Imports torch only (no ray, deepspeed, transformers); a test checks this.
"""

from metaray.core.adapt import AdaptResult, InnerConfig, adapt
from metaray.core.heads import (
    LinearHead,
    cosine_logits,
    fit_linear_probe,
    leave_one_out_loss,
    prototypes,
    ridge_head,
    ridge_leave_one_out_loss,
)
from metaray.core.outer import (
    OUTER_ALGORITHMS,
    PartialSum,
    QueryObjective,
    TaskUpdate,
    make_outer_optimizer,
    mean_pseudo_gradient,
    outer_step,
    partial_sum,
    query_gradient,
    query_objective,
    reptile_pseudo_gradient,
    task_pseudo_gradient,
)
from metaray.core.prompt import PROMPT_INITS, SoftPrompt

__all__ = [
    "OUTER_ALGORITHMS",
    "PROMPT_INITS",
    "PartialSum",
    "QueryObjective",
    "AdaptResult",
    "InnerConfig",
    "LinearHead",
    "SoftPrompt",
    "TaskUpdate",
    "adapt",
    "cosine_logits",
    "fit_linear_probe",
    "leave_one_out_loss",
    "make_outer_optimizer",
    "mean_pseudo_gradient",
    "outer_step",
    "partial_sum",
    "prototypes",
    "query_gradient",
    "query_objective",
    "reptile_pseudo_gradient",
    "ridge_head",
    "ridge_leave_one_out_loss",
    "task_pseudo_gradient",
]
