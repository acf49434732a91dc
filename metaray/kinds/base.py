"""What every task kind shares: the config rules common to all, and the classifier
kinds' data side (classify and image tasks are N-way K-shot episodes of a corpus)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from metaray.config import ConfigError, EvalConfig, ExperimentConfig, MetaConfig, ModelConfig
from metaray.core import InnerConfig
from metaray.data import DataRegistry, Episode, TaskSpec, check_feasible, eligible_classes, sample_episode
from metaray.models.backbone import weights_gib
from metaray.models.teacher import Teacher, check_teacher, teacher_model_config


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class KindRules:
    """The settings a kind takes: eval methods of its own (beyond the prompt methods every
    kind runs), whether prompts may start from a vocabulary, warped views, bf16, the
    full-label protocol and sharded mode."""

    own_methods: tuple[str, ...]
    text_inits: bool = True
    views: bool = False
    bf16: bool = False
    full_protocol: bool = False
    sharded: bool = True
    pixels: bool = False  # inputs are images: prompt.region (a visual prompt's), distill.image_size
    heads: bool = False  # scores through a head fitted on the support: meta.algorithm=r2d2, meta.consistency
    edits: bool = False  # text edits (`inner.augment`) make the support's augmented copies
    synonyms: bool = False  # of them, synonyms from a sentence encoder's vocabulary (`augment.synonyms`)
    distill: bool = False  # a teacher's soft labels (`distill.teacher`) fit a distilled head
    pool: bool = False  # prompts generated per input from a pool (`prompt.pool_size`)
    answers: bool = False  # generates its answers: model.answer_decoding


PROMPT_METHODS = ("random", "multitask", "reptile", "fomaml")
HEAD_METHODS = ("r2d2",)  # meta-learned through a head fitted on the support (kinds with heads)
TEXT_INITS = ("text", "vocab")  # prompt inits (and eval methods) from a vocabulary


def check_teacher_side(kind: str, rules: KindRules, section: str, distill) -> None:
    """Refuse a teacher's input side (`section`: distill, or a served teacher's setting)
    for a kind that reads no images."""
    require(
        rules.pixels or not distill.image_size,
        f"{section}.image_size={distill.image_size} is an image teacher's input side, and kind={kind} reads "
        "no images; unset it",
    )


def check_budget(kind: str, rules: KindRules, section: str, inner: InnerConfig) -> None:
    """Refuse an adaptation budget (`section`: meta.inner, eval.inner, a served budget)
    `kind` cannot run: augmented copies it cannot make, a head it has not."""
    edits = inner.augment.enabled
    require(
        rules.edits or not edits,
        f"{section}.augment: text edits are for the text kinds (classify, qa); unset them for kind={kind}",
    )
    require(
        not edits or inner.views,
        f"{section}.augment: edits make the support's augmented copies, and {section}.views=0 asks for none; "
        "set views to the copies per example (e.g. 2) or unset the edits",
    )
    require(
        rules.synonyms or not inner.augment.synonyms,
        f"{section}.augment.synonyms: synonyms come from a sentence encoder's vocabulary (kind=classify); kind={kind} "
        "takes token_dropout, span_deletion and word_swaps",
    )
    if rules.edits:
        require(
            edits or not inner.views,
            f"{section}.views={inner.views}: kind={kind} makes its copies with text edits; set "
            f"{section}.augment.token_dropout, span_deletion, word_swaps or synonyms, or views to 0",
        )
    require(
        rules.views or rules.edits or not inner.views,
        f"{section}.views: augmented views are for images (kind=image) and text (kind=classify, qa); "
        f"set it to 0 for kind={kind}",
    )
    require(
        rules.heads or inner.loss == "proto",
        f"{section}.loss={inner.loss} scores through a classifier head, and kind={kind} has none; set it to proto",
    )


def check_rules(kind: str, rules: KindRules, cfg: ExperimentConfig) -> None:
    """Refuse settings `kind` cannot take, naming the setting and what to set instead."""
    methods = rules.own_methods + PROMPT_METHODS + (TEXT_INITS if rules.text_inits else ())
    methods += HEAD_METHODS if rules.heads else ()
    for method in cfg.eval.methods:
        require(
            method in methods,
            f"eval.methods: {method!r} is not a method for kind={kind} (its methods: {', '.join(methods)}); set "
            "eval.methods (configs/qa.yaml and configs/omniglot.yaml are presets for the other kinds)",
        )
    require(
        rules.heads or cfg.meta.algorithm not in HEAD_METHODS,
        f"meta.algorithm={cfg.meta.algorithm} fits a classifier head on each task's support set, and kind={kind} "
        "has no head; set meta.algorithm to reptile, fomaml or multitask",
    )
    require(
        rules.heads or not cfg.meta.consistency,
        f"meta.consistency compares prompted and unprompted embeddings, which kind={kind} has not; set it to 0",
    )
    require(
        rules.text_inits or cfg.prompt.init not in TEXT_INITS,
        f"kind={kind}: a visual prompt has no vocabulary; set prompt.init=random, not {cfg.prompt.init!r}",
    )
    require(
        rules.pixels or cfg.prompt.region == "frame",
        f"prompt.region is for visual prompts (kind=image); unset it for kind={kind}",
    )
    require(
        cfg.prompt.depth == 1 or not cfg.sharded.enabled,
        f"prompt.depth={cfg.prompt.depth}: deep prompts hook the backbone's layers, which sharded mode partitions; "
        "set prompt.depth=1 or sharded.enabled=false",
    )
    check_pool(kind, rules, cfg)
    for section, inner in (("meta.inner", cfg.meta.inner), ("eval.inner", cfg.eval.inner)):
        check_budget(kind, rules, section, inner)
        require(
            not inner.augment.synonyms or not cfg.sharded.enabled,
            f"{section}.augment.synonyms reads the input-embedding table, which sharded mode partitions; set "
            "sharded.enabled=false or unset the synonyms",
        )
    require(
        rules.bf16 or cfg.model.compute_dtype == "fp32",
        f"model.compute_dtype: {cfg.model.compute_dtype} is for the causal LM (kind=qa); unset it for kind={kind}",
    )
    require(
        rules.answers or cfg.model.answer_decoding == "greedy",
        f"model.answer_decoding: {cfg.model.answer_decoding} is for generated answers (kind=qa); "
        f"unset it for kind={kind}",
    )
    require(
        rules.full_protocol or cfg.eval.protocol == "episodes",
        f"kind={kind} evaluates episodes; set eval.protocol=episodes",
    )
    require(
        rules.distill or not cfg.distill.enabled,
        f"distill.teacher={cfg.distill.teacher!r}: a teacher labels the inputs of a classifier head (kind=classify "
        f"or image), and kind={kind} has none; unset distill.teacher",
    )
    check_teacher_side(kind, rules, "distill", cfg.distill)
    require(
        not cfg.meta.distill or cfg.distill.enabled,
        f"meta.distill={cfg.meta.distill} weighs a teacher's soft labels in meta-training, but distill.teacher names "
        "no teacher backbone; set one (e.g. all-mpnet-base-v2) or meta.distill=0",
    )
    require(
        not cfg.meta.distill or not cfg.sharded.enabled,
        "meta.distill: distillation in meta-training runs on actors, not in sharded mode; set sharded.enabled=false "
        "or meta.distill=0",
    )
    require(
        "teacher" not in cfg.eval.methods or cfg.distill.enabled,
        "eval.methods has 'teacher' but distill.teacher names no teacher backbone; set one (e.g. all-mpnet-base-v2)",
    )
    require(
        rules.sharded or not cfg.sharded.enabled,
        f"sharded mode partitions Hugging Face backbones; kind={kind} runs on actors",
    )


def check_pool(kind: str, rules: KindRules, cfg: ExperimentConfig) -> None:
    """Refuse a prompt pool (`prompt.pool_size` > 1) where it is not built: another kind, a
    deep prompt, sharded mode."""
    n = cfg.prompt.pool_size
    if n == 1:
        return
    require(
        rules.pool, f"prompt.pool_size={n}: prompts per input are built for kind=classify; set it to 1 for kind={kind}"
    )
    require(
        cfg.prompt.depth == 1,
        f"prompt.pool_size={n} mixes input prompts per text, and prompt.depth={cfg.prompt.depth} asks for prompts "
        "inside the backbone; set one of them to 1",
    )
    require(
        not cfg.sharded.enabled,
        f"prompt.pool_size={n}: a pool weighs its prompts by a second, unprompted pass of the backbone, which sharded "
        "mode's one pass per backward does not allow; set prompt.pool_size=1 or sharded.enabled=false",
    )


def family_of_kind(registry: DataRegistry, name: str, kind: str):
    """The family `name`, refused where it is of another kind."""
    family = registry.family(name)
    require(
        family.kind == kind,
        f"{name!r} is a {family.kind} family, and kind={kind}; set kind={family.kind} or pick a {kind} family",
    )
    return family


class KindBase:
    """What every kind object does the same way: its rules checked against a config."""

    name: str
    rules: KindRules

    def check_config(self, cfg: ExperimentConfig) -> None:
        check_rules(self.name, self.rules, cfg)

    def validation_metric(self, meta: MetaConfig) -> str:
        """The score meta-validation selects on: the head the meta-objective trains for."""
        return "probe" if meta.objective().head == "ridge" else self.primary_metric


class CorpusTasks(KindBase):
    """N-way K-shot episodes of labelled corpora (classify and image kinds)."""

    def weights_gib(self, model: ModelConfig) -> float:
        """The size of a backbone's weight files (GiB)."""
        return weights_gib(model)

    def check_teacher(self, cfg: ExperimentConfig) -> None:
        """Refuse a `distill.teacher` this kind cannot load, or too large for the actors."""
        check_teacher(cfg, self.check_backbone, self.weights_gib)

    def teacher(self, cfg: ExperimentConfig, pixels=None) -> Teacher:
        """The distillation teacher `distill.teacher` names: its backbone loaded as this
        kind loads one and read without a prompt, a linear probe fitted per task."""
        model = teacher_model_config(cfg.model, cfg.distill.teacher, cfg.distill.image_size)
        plain = dataclasses.replace(cfg, model=model, prompt=dataclasses.replace(cfg.prompt, depth=1, pool_size=1))
        return Teacher(model, encoder=self.prompted_model(plain, *self.load_backbone(model), pixels=pixels).encoder)

    def family_size(self, registry: DataRegistry, name: str, n_way: int, k_shot: int, needed: int, same_group=False):
        """The family's classes, after checking it can supply `n_way` classes of `needed` examples."""
        family_of_kind(registry, name, self.name)
        corpus = registry.corpus(name)
        check_feasible(corpus, n_way, needed, same_group)
        return len(corpus.label_names)

    def task_ways(self, n_way: int) -> int:
        return n_way

    def task_classes(self, registry: DataRegistry, name: str, needed: int) -> int:
        """The most ways a task of the family can have: its classes with `needed` examples."""
        return eligible_classes(registry.corpus(name), needed)

    def episode(self, registry: DataRegistry, spec: TaskSpec) -> Episode:
        support = registry.corpus(spec.support_family) if spec.support_family else None
        return sample_episode(spec, registry.corpus(spec.family), support)

    def test_specs(self, registry: DataRegistry, ev: EvalConfig, shot: int) -> list[TaskSpec]:
        """Support draws of every class (full protocol; the support set from the family's
        train part) or N-way episodes."""
        if ev.protocol == "episodes":
            return [TaskSpec(ev.target, i, ev.n_way, shot, ev.q_query, ev.seed) for i in range(ev.episodes)]
        support = registry.family(ev.target).support
        require(
            bool(support),
            f"eval.protocol=full draws support examples from a family's train file, and {ev.target!r} has none; "
            "set eval.protocol=episodes or a target such as banking77, trec/test or hint3/BOT/test",
        )
        return [TaskSpec(ev.target, d, 0, shot, ev.query_per_class, ev.seed, support) for d in range(ev.draws)]

    def check_target(self, registry: DataRegistry, ev: EvalConfig) -> None:
        if ev.protocol == "episodes":
            self.family_size(registry, ev.target, ev.n_way, max(ev.shots), max(ev.shots) + ev.q_query)
            return
        family_of_kind(registry, ev.target, self.name)
        for spec in self.test_specs(registry, ev, max(ev.shots))[:1]:
            registry.corpus(spec.family), registry.corpus(spec.support_family)

    def setting_name(self, registry: DataRegistry, ev: EvalConfig, shot: int) -> str:
        """`77-way 5-shot` (full: every class of the target) or `5-way 1-shot`."""
        ways = len(registry.corpus(ev.target).label_names) if ev.protocol == "full" else ev.n_way
        return f"{ways}-way {shot}-shot"
