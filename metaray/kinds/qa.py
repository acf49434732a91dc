"""kind: qa — extractive question answering with a frozen causal LM.

The prompted model is `PromptedQA` over `PromptedCausalLM`; scores are SQuAD exact match
and F1 of the greedy answers, meta-validation selects on F1. A task is one article: K
support questions and the article's other questions as queries (no classes: n_way 0).
Served tasks carry (context, question, answer) triples, not a single input field.
"""

from __future__ import annotations

from metaray.config import EvalConfig, ExperimentConfig, ModelConfig, PromptConfig
from metaray.data import DataRegistry, QAEpisode, TaskSpec, check_articles, sample_qa_episode
from metaray.kinds.base import KindBase, KindRules, family_of_kind
from metaray.models.backbone import check_backbone, check_causal_lm, load_causal_lm
from metaray.models.causal_lm import PromptedCausalLM
from metaray.models.deep import check_text_depth
from metaray.models.qa import QA_METRICS, PromptedQA


class QAKind(KindBase):
    name = "qa"
    metrics = QA_METRICS
    primary_metric = "f1"
    rules = KindRules(own_methods=("instruction",), bf16=True, edits=True, answers=True)  # edits: of the questions
    hugging_face = True
    input_field, checkpoint_setting, budget_setting = None, "qa_checkpoint", "qa_adapt"
    distill_setting, teacher_example = None, None  # no teacher

    def check_backbone(self, cfg: ModelConfig, prompt: PromptConfig | None = None) -> None:
        check_backbone(cfg)
        check_causal_lm(cfg)
        check_text_depth(cfg, prompt.depth if prompt else 1)

    def load_backbone(self, cfg: ModelConfig):
        return load_causal_lm(cfg)

    def prompted_model(self, cfg: ExperimentConfig, tokenizer, model, lockstep=False, pixels=None):
        """`lockstep`: a partitioned backbone, whose ranks must run the same passes."""
        m = cfg.model
        lm = PromptedCausalLM(
            tokenizer,
            model,
            max_context_tokens=m.max_context_tokens,
            max_answer_tokens=m.max_answer_tokens,
            answer_decoding=m.answer_decoding,
            instruction=m.instruction,
            lockstep=lockstep,
            compute_dtype="fp32" if lockstep else m.compute_dtype,  # partitioned: sharded.dtype decides
            depth=cfg.prompt.depth,
            backbone=m.backbone,
        )
        return PromptedQA(lm)

    def family_size(self, registry: DataRegistry, name: str, n_way: int, k_shot: int, needed: int, same_group=False):
        """The family's articles, after checking each leaves query questions after K support ones."""
        family_of_kind(registry, name, self.name)
        articles = registry.load(name)
        check_articles(articles, k_shot, name)
        return len(articles)

    def task_ways(self, n_way: int) -> int:
        return 0  # a task is one article, not N classes

    def task_classes(self, registry: DataRegistry, name: str, needed: int) -> int:
        return len(registry.load(name))  # the sampler's weight of the family: its articles

    def episode(self, registry: DataRegistry, spec: TaskSpec) -> QAEpisode:
        return sample_qa_episode(spec, registry.load(spec.family))

    def test_specs(self, registry: DataRegistry, ev: EvalConfig, shot: int) -> list[TaskSpec]:
        """Episode i is held-out article i mod the number of articles, a new draw on each pass."""
        return [TaskSpec(ev.target, i, 0, shot, ev.q_query, ev.seed) for i in range(ev.episodes)]

    def check_target(self, registry: DataRegistry, ev: EvalConfig) -> None:
        self.family_size(registry, ev.target, 0, max(ev.shots), 0)

    def setting_name(self, registry: DataRegistry, ev: EvalConfig, shot: int) -> str:
        return f"{shot}-shot"


QA = QAKind()
