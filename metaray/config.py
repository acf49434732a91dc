"""Typed, frozen experiment configuration.

A config is a YAML file of sections (model, prompt, data, meta, eval, ray, sharded, output, distill)
and the task `kind`, plus dotted overrides (`meta.inner.lr=1e-3`). Unknown keys and bad values stop the
run before any work starts, naming the key and the closest valid one. The rules of one task
kind (which methods, inits and settings it takes) live in its object (`metaray.kinds`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metaray.core.adapt import InnerConfig
from metaray.core.distill import DistillConfig
from metaray.core.outer import OUTER_ALGORITHMS, OUTER_OPTIMIZERS, QueryObjective, query_objective
from metaray.core.prompt import PROMPT_INITS
from metaray.errors import MetarayError
from metaray.storage import is_uri, local_copy

DATA_DIR_ENV = "METARAY_DATA_DIR"
PLACEMENTS = ("default", "spread")
EVAL_METHODS = (
    "protonet",
    "linear_probe",
    "instruction",
    "finetune",
    "random",
    "text",
    "vocab",
    "multitask",
    "reptile",
    "fomaml",
    "r2d2",
    "teacher",
)
# Settings of the built-in data sets before they moved under data.sources.NAME: read in old
# config files, checkpoints and sweep results as the new keys.
LEGACY_DATA_KEYS = {
    "clinc150_val_domains": ("clinc150", "val_domains"),
    "clinc150_test_domains": ("clinc150", "test_domains"),
    "xquad_val_articles": ("xquad", "val_articles"),
    "xquad_test_articles": ("xquad", "test_articles"),
    "omniglot_val_alphabets": ("omniglot", "val_alphabets"),
    "omniglot_test_alphabets": ("omniglot", "test_alphabets"),
    "omniglot_rotations": ("omniglot", "rotations"),
}


class ConfigError(MetarayError, ValueError):
    """A config file or override that cannot be used; the message says what to change."""


PROMPT_POSITIONS = ("after_special", "first")
PROMPT_REGIONS = ("frame", "image")  # a visual prompt on the frame around the drawing, or on the whole image
DTYPES = ("fp32", "bf16")  # model.compute_dtype, sharded.dtype
COMPUTE_DTYPES = ("auto", *DTYPES)  # model.compute_dtype: auto is bf16 where the hardware has it, else fp32
ANSWER_DECODINGS = ("greedy", "span")  # model.answer_decoding (kind: qa)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "all-MiniLM-L6-v2"  # Hugging Face id, local folder, or a packaged name (SmolLM2-135M-Instruct)
    gguf_file: str = ""  # a GGUF file inside the backbone folder (dequantised to fp32 on load)
    max_length: int = 64  # tokens per sentence, before the prompt
    scale: float = 20.0  # temperature of cosine / linear logits
    pool_prompt: bool = False  # include prompt positions in mean pooling
    prompt_position: str = "after_special"  # after [CLS]/BOS | first (PEFT's prompt tuning layout: exportable)
    allow_download: bool = False  # let transformers fetch a model id that is not local
    encode_batch_size: int = 128
    # question answering (kind: qa)
    max_context_tokens: int = 192  # longer contexts: a window around the answer (training), their head (eval)
    max_answer_tokens: int = 16  # generation limit (answers also stop at the end token or a new line)
    instruction: str = "Answer the question with a short phrase copied from the context."  # the no-prompt baseline
    # greedy: the most likely token at each step; span: the most likely of the tokens that
    # keep the answer a span of the context (extractive QA: SQuAD's answers are spans)
    answer_decoding: str = "greedy"
    # bf16: the LM's forward passes under torch.autocast to bfloat16 (weights, prompt and its
    # gradient stay fp32); faster on CPUs with AVX512-BF16 or AMX and on GPUs with bf16, many
    # times slower on CPUs without (emulated). auto: bf16 where the process running the model
    # has it natively, else fp32 (decided there: an actor's machine, not the driver's)
    compute_dtype: str = "fp32"
    # images (kind: image): the drawing, resized, inside a frame of prompt.length learnable pixels
    image_size: int = 84  # the backbone's input side, frame included

    def __post_init__(self) -> None:
        _check(
            self.prompt_position in PROMPT_POSITIONS,
            f"model.prompt_position must be one of {PROMPT_POSITIONS}, got {self.prompt_position!r}",
        )
        _check(self.max_context_tokens >= 8, f"model.max_context_tokens must be >= 8, got {self.max_context_tokens}")
        _check(self.max_answer_tokens >= 1, f"model.max_answer_tokens must be >= 1, got {self.max_answer_tokens}")
        _check(
            self.answer_decoding in ANSWER_DECODINGS,
            f"model.answer_decoding must be one of {ANSWER_DECODINGS}, got {self.answer_decoding!r}",
        )
        _check(
            self.compute_dtype in COMPUTE_DTYPES,
            f"model.compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}",
        )


@dataclass(frozen=True)
class PromptConfig:
    length: int = 16
    init: str = "vocab"  # random | text | vocab
    text: str = "classify the intent of this customer request"
    seed: int = 0
    region: str = "frame"  # kind: image; where the prompt's pixels are added: frame | image (frame and drawing)
    # Where the prompt enters the backbone: 1, the input only (token embeddings, pixels).
    # Text (classify, qa): d > 1 also replaces the prompt positions' states before layers
    # 1 .. d - 1 (P-tuning v2); images: adds a learnable map to the feature maps after
    # each of the backbone's first d - 1 stages (the CNN analogue of VPT-deep)
    depth: int = 1
    # Prompts per input (kind: classify): n > 1 is a pool of n prompts with keys, each input's
    # prompt their mix weighted by softmax(cosine(its frozen embedding, key) / pool_temperature)
    # (MetaPrompter, Jiang et al. 2023; `metaray.models.prompt_pool`); 1: one prompt for all
    pool_size: int = 1
    pool_temperature: float = 0.1
    # A checkpoint (run folder, round folder or URI; a run's best) whose θ is θ₀ instead
    # of `init`: meta-learning warm-started from, e.g., a multitask prompt.
    warm_start: str = ""

    def __post_init__(self) -> None:
        _check(self.length >= 1, "prompt.length must be >= 1")
        _check(self.depth >= 1, f"prompt.depth must be >= 1 (1: the input only), got {self.depth}")
        _check(
            self.pool_size >= 1, f"prompt.pool_size must be >= 1 (1: one prompt for every input), got {self.pool_size}"
        )
        _check(self.pool_temperature > 0, f"prompt.pool_temperature must be > 0, got {self.pool_temperature}")
        _check(self.init in PROMPT_INITS, f"prompt.init must be one of {PROMPT_INITS}, got {self.init!r}")
        _check(self.region in PROMPT_REGIONS, f"prompt.region must be one of {PROMPT_REGIONS}, got {self.region!r}")


@dataclass(frozen=True)
class DataConfig:
    data_dir: str = ""  # path or URI (s3://, gs://, file://; copied once per machine); empty: $METARAY_DATA_DIR
    meta_train: tuple[str, ...] = ("clinc150/train", "snips")
    meta_val: str = "clinc150/val"
    # Options per data source (`metaray.data.registry`): the built-in sets' splits
    # (`clinc150: {val_domains: [work]}`) and a user's own files (`mine: {format: csv, path: ...}`)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_way: int = 5
    k_shot: int = 5
    q_query: int = 5
    same_domain: bool = False  # meta-train tasks draw all classes from one domain
    seed: int = 0
    # A mixture of meta-training task shapes: each task's ways drawn from these, capped at its
    # family's classes (empty: every task is n_way; meta-validation stays n_way)
    ways: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check(all(w >= 2 for w in self.ways), f"data.ways must all be >= 2, got {list(self.ways)}")
        _check(
            not (self.ways and self.same_domain),
            "data.ways caps each task at its family's classes, not at a domain's; unset data.ways or data.same_domain",
        )
        _check(self.n_way >= 2, f"data.n_way must be >= 2, got {self.n_way}")
        _check(self.k_shot >= 1, f"data.k_shot must be >= 1, got {self.k_shot}")
        _check(self.q_query >= 1, f"data.q_query must be >= 1, got {self.q_query}")
        _check(len(self.meta_train) >= 1, "data.meta_train needs at least one task family")

    def resolved_dir(self) -> Path:
        raw = self.data_dir or os.environ.get(DATA_DIR_ENV, "")
        if not raw:
            raise ConfigError(f"no data directory: set data.data_dir=PATH or the environment variable {DATA_DIR_ENV}")
        if is_uri(raw):  # object storage: a local copy per machine
            return local_copy(raw)
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"data directory {path} does not exist; set data.data_dir=PATH or {DATA_DIR_ENV} to the folder "
                "holding the data sets (clinc150/, banking77/, ... as in shared/data) or your own files"
            )
        return path


AGGREGATIONS = ("flat", "tree")


@dataclass(frozen=True)
class MetaConfig:
    algorithm: str = "reptile"  # reptile | fomaml | multitask | r2d2 (head-matched: a ridge head fitted per task)
    rounds: int = 40
    meta_batch_size: int = 4
    inner: InnerConfig = field(default_factory=InnerConfig)
    outer_optimizer: str = "sgd"
    outer_lr: float = 0.5
    outer_momentum: float = 0.0
    eval_every: int = 10  # rounds between meta-validations (0: never)
    val_episodes: int = 8
    val_steps: int = 5  # adaptation budget at meta-validation
    # Stragglers (Ray mode): once `round_deadline_s` has passed and at least `min_tasks`
    # tasks are done, the round steps θ with the mean over the finished tasks and drops
    # the rest. 0 / 0: wait for every task (the exact, reproducible default).
    round_deadline_s: float = 0.0
    min_tasks: int = 0
    # Ray mode: `flat` sends every task's pseudo-gradient to the aggregator; `tree` sums
    # them per node first (a sub-aggregator actor on each node); both give the same θ.
    aggregation: str = "flat"
    # The query loss (fomaml, multitask, r2d2; classifier kinds): the weight of the squared
    # distance between prompted and unprompted embeddings. r2d2's ridge penalty: inner.ridge_lambda.
    consistency: float = 0.0
    # Distillation in meta-training (needs distill.teacher): the weight of the teacher's soft
    # labels of each task's queries (their labels unread) in the inner loop's support loss, and
    # beside their labels in the query loss, at distill.temperature. 0: off.
    distill: float = 0.0

    def objective(self) -> QueryObjective:
        return query_objective(self.algorithm, self.inner.ridge_lambda, self.consistency)

    def __post_init__(self) -> None:
        _check(self.consistency >= 0, f"meta.consistency must be >= 0, got {self.consistency}")
        _check(self.distill >= 0, f"meta.distill must be >= 0, got {self.distill}")
        _check(
            not self.consistency or self.algorithm != "reptile",
            "meta.consistency weighs a term of the query loss, and reptile's pseudo-gradient (θ - φ) never "
            "reads the query loss; set meta.algorithm to fomaml, multitask or r2d2, or meta.consistency=0",
        )
        _check(self.round_deadline_s >= 0, f"meta.round_deadline_s must be >= 0, got {self.round_deadline_s}")
        _check(
            0 <= self.min_tasks <= self.meta_batch_size,
            f"meta.min_tasks must be in [0, meta.meta_batch_size={self.meta_batch_size}], got {self.min_tasks}",
        )
        _check(not self.min_tasks or self.round_deadline_s > 0, "meta.min_tasks needs meta.round_deadline_s > 0")
        _check(self.algorithm in OUTER_ALGORITHMS, f"meta.algorithm must be one of {OUTER_ALGORITHMS}")
        _check(self.outer_optimizer in OUTER_OPTIMIZERS, f"meta.outer_optimizer must be one of {OUTER_OPTIMIZERS}")
        _check(
            self.aggregation in AGGREGATIONS,
            f"meta.aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}",
        )
        _check(self.rounds >= 1, f"meta.rounds must be >= 1, got {self.rounds}")
        _check(self.meta_batch_size >= 1, f"meta.meta_batch_size must be >= 1, got {self.meta_batch_size}")
        _check(self.outer_lr > 0, f"meta.outer_lr must be > 0, got {self.outer_lr}")


@dataclass(frozen=True)
class EvalConfig:
    protocol: str = "full"  # full: all classes of the target, K-shot; episodes: N-way K-shot
    target: str = "banking77"
    shots: tuple[int, ...] = (5, 10)
    draws: int = 1  # support draws (full protocol)
    episodes: int = 200  # episodes (episodes protocol)
    n_way: int = 5
    q_query: int = 15
    query_per_class: int = 0  # full protocol: cap on test examples per class (0: all)
    steps: tuple[int, ...] = (0, 5, 20, 80)
    inner: InnerConfig = field(default_factory=lambda: InnerConfig(steps=80, lr=1e-2, batch_ways=16))
    methods: tuple[str, ...] = ("protonet", "linear_probe", "random", "text", "reptile")
    checkpoints: dict[str, str] = field(default_factory=dict)  # method -> checkpoint dir or file
    finetune_lr: float = 0.01  # kind: image; the finetune baseline's SGD (momentum 0.9) learning rate
    seed: int = 1234

    def __post_init__(self) -> None:
        _check(self.protocol in ("full", "episodes"), f"eval.protocol must be full or episodes, got {self.protocol!r}")
        for method in self.methods:
            _check(method in EVAL_METHODS, f"eval.methods: unknown method {method!r}{_suggest(method, EVAL_METHODS)}")
        _check(list(self.steps) == sorted(set(self.steps)), "eval.steps must be increasing")
        _check(bool(self.shots) and min(self.shots) >= 1, "eval.shots must be positive")


@dataclass(frozen=True)
class RayConfig:
    address: str = ""  # empty: $RAY_ADDRESS, else an embedded local Ray
    num_actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0  # > 0: each adapter actor reserves this share of a GPU and runs the backbone there
    memory_per_actor_gb: float = 0.0  # > 0: Ray reserves this much memory per adapter actor when scheduling
    shared_backbone: bool = True  # actors on a node map one read-only copy of the weights from the object store
    num_cpus: int = 0  # embedded Ray's CPUs (0: num_actors * cpus_per_actor)
    torch_threads: int = 1  # intra-op threads per actor
    local: bool = False  # run the same loop in this process, without Ray (benchmarks, debugging)
    connect_timeout_s: float = 10.0  # an unreachable ray.address fails after this long
    max_restarts: int = 3  # a dead adapter actor is restarted and its task re-run, up to this many times
    placement: str = "default"  # default: Ray's (fills a node before the next) | spread: adapters across nodes
    resources_per_actor: dict[str, float] = field(default_factory=dict)  # custom node resources, e.g. {trainer: 1}

    def __post_init__(self) -> None:
        _check(self.num_actors >= 1, f"ray.num_actors must be >= 1, got {self.num_actors}")
        _check(self.placement in PLACEMENTS, f"ray.placement must be one of {PLACEMENTS}, got {self.placement!r}")
        for name, amount in self.resources_per_actor.items():
            _check(amount > 0, f"ray.resources_per_actor.{name} must be > 0, got {amount}")
        _check(self.cpus_per_actor > 0, "ray.cpus_per_actor must be > 0")
        _check(self.gpus_per_actor >= 0, "ray.gpus_per_actor must be >= 0")
        _check(self.memory_per_actor_gb >= 0, "ray.memory_per_actor_gb must be >= 0")


@dataclass(frozen=True)
class ShardedConfig:
    """DeepSpeed ZeRO-3 mode: the frozen backbone partitioned over the W workers of a Ray
    Train TorchTrainer, each worker adapting on its own tasks in lockstep."""

    enabled: bool = False
    num_workers: int = 2  # W: ranks the backbone is partitioned over (meta_batch_size must divide by it)
    cpus_per_worker: float = 1.0
    use_gpu: bool = False  # one GPU per worker and NCCL; else gloo on CPU
    dtype: str = "fp32"  # backbone compute dtype: fp32 | bf16 (the prompt and θ stay fp32)
    offload_params: bool = False  # ZeRO-3 parameter offload to CPU memory (GPU workers)
    zero_init: bool = True  # build the model already partitioned (deepspeed.zero.Init), never whole
    persistence_threshold: int = 0  # parameters below this many elements stay whole on every rank
    prefetch_elements: int = 0  # gather ahead of use (0: each layer when it runs, least memory; GPUs: 5e7)
    collective_timeout_s: float = 600.0  # a rank that waits this long for its peers fails the run

    def __post_init__(self) -> None:
        _check(self.num_workers >= 1, f"sharded.num_workers must be >= 1, got {self.num_workers}")
        _check(self.cpus_per_worker > 0, "sharded.cpus_per_worker must be > 0")
        _check(self.dtype in DTYPES, f"sharded.dtype must be one of {DTYPES}, got {self.dtype!r}")
        _check(self.persistence_threshold >= 0, "sharded.persistence_threshold must be >= 0")
        _check(self.prefetch_elements >= 0, "sharded.prefetch_elements must be >= 0")
        _check(not self.offload_params or self.use_gpu, "sharded.offload_params needs sharded.use_gpu=true")


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs/default"  # a path every node sees, or an object-storage URI (s3://bucket/runs/x)
    keep_last: int = 3
    checkpoint_every: int = 1  # rounds between checkpoints (also at every meta-validation and the end)
    tensorboard: bool = True

    def __post_init__(self) -> None:
        _check(self.keep_last >= 1, f"output.keep_last must be >= 1, got {self.keep_last}")
        _check(self.checkpoint_every >= 1, f"output.checkpoint_every must be >= 1, got {self.checkpoint_every}")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "default"
    kind: str = "classify"  # classify | qa | image: the task kind (`metaray.kinds`; model, data, metrics follow)
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    sharded: ShardedConfig = field(default_factory=ShardedConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        _check(
            not (self.ray.local and self.meta.round_deadline_s),
            "meta.round_deadline_s needs Ray actors; unset it or set ray.local=false",
        )
        if self.sharded.enabled:
            self._check_sharded()

    def _check_sharded(self) -> None:
        """Lockstep: every rank runs the same number of tasks, none may be dropped."""
        b, w = self.meta.meta_batch_size, self.sharded.num_workers
        _check(
            b % w == 0,
            f"sharded mode: meta.meta_batch_size={b} tasks do not divide among sharded.num_workers={w} "
            f"(each worker adapts meta_batch_size / num_workers tasks per round); "
            f"use a multiple of {w}, e.g. meta.meta_batch_size={b + w - b % w}",
        )
        _check(not self.ray.local, "sharded.enabled and ray.local are two different modes; set one")
        _check(
            self.model.compute_dtype != "bf16",
            "sharded mode computes in sharded.dtype (DeepSpeed's); set sharded.dtype=bf16, not model.compute_dtype",
        )
        _check(
            not self.meta.round_deadline_s,
            "meta.round_deadline_s drops straggling tasks, which sharded mode cannot (its ranks run in lockstep)",
        )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _suggest(key: str, valid, prefix: str | None = None) -> str:
    """`; did you mean X?` for the closest valid name (dotted with `prefix` when given)."""
    close = difflib.get_close_matches(key, list(valid), n=1)
    if not close:
        return f"; valid: {', '.join(sorted(valid))}"
    return f"; did you mean {prefix}{close[0]}?" if prefix is not None else f"; did you mean {close[0]!r}?"


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{path.rstrip('.')} must be a mapping of {hint.__name__} fields, got {value!r}")
        return build(hint, value, path)
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        (item_type, _) = typing.get_args(hint)
        return tuple(_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(items))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        item_type = typing.get_args(hint)[1]
        if item_type is str:
            return {str(k): str(v) for k, v in value.items()}
        if item_type in (int, float):
            return {str(k): _coerce(v, item_type, f"{path}.{k}") for k, v in value.items()}
        return {str(k): _mapping(v, f"{path}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        value = _number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and value != int(value)):
            raise ConfigError(f"{path} must be {'an integer' if hint is int else 'a number'}, got {value!r}")
        return hint(value)
    if hint is str:
        return "" if value is None else str(value)
    return value


def _mapping(value: Any, path: str) -> dict[str, Any]:
    """A section of free-form settings (checked by whoever reads it)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path} must be a mapping of settings, got {value!r}")
    return {str(k): v for k, v in value.items()}


def migrate(tree: dict[str, Any]) -> dict[str, Any]:
    """An experiment dict with settings renamed since it was written (LEGACY_DATA_KEYS)
    moved to their new place; the input is not modified."""
    data = dict(tree.get("data") or {})
    legacy = [key for key in LEGACY_DATA_KEYS if key in data]
    if not legacy:
        return tree
    sources = {name: dict(opts or {}) for name, opts in (data.get("sources") or {}).items()}
    for key in legacy:
        source, option = LEGACY_DATA_KEYS[key]
        sources.setdefault(source, {}).setdefault(option, data.pop(key))
    return {**tree, "data": {**data, "sources": sources}}


def experiment_from_dict(tree: dict[str, Any]) -> ExperimentConfig:
    """An ExperimentConfig from a nested dict (a config file, a checkpoint's or a sweep's copy)."""
    return build(ExperimentConfig, migrate(tree))


def _number(value: Any) -> Any:
    """YAML 1.1 reads `1e-3` as a string; accept it as the number it spells."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def build(cls, values: dict[str, Any], prefix: str = ""):
    """Build dataclass `cls` from a nested dict, refusing unknown keys by name."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"unknown key {path}{_suggest(key, fields, prefix)}")
        hint = hints[key]
        kwargs[key] = _coerce(value, hint, f"{path}." if dataclasses.is_dataclass(hint) else path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {err}") from err


def apply_override(tree: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like section.key=value")
    dotted, raw = override.split("=", 1)
    parts = dotted.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(path: str | Path | None, overrides: tuple[str, ...] | list[str] = ()) -> ExperimentConfig:
    """Read YAML (or start from defaults), apply dotted overrides, validate."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        tree = loaded
    tree = migrate(tree)
    for override in overrides:
        apply_override(tree, override)
    return experiment_from_dict(tree)


def to_dict(cfg) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), ready for YAML/JSON."""

    def plain(value):
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))
