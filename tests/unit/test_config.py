"""Config loading: every shipped YAML validates; bad keys and values name the fix."""

from pathlib import Path

import pytest

from metaray.config import ConfigError, ExperimentConfig, build, load_config, to_dict
from metaray.data import DataRegistry
from metaray.kinds import kind_of

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_shipped_configs():
    assert len(SHIPPED) >= 3


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_yaml_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    kind_of(cfg)  # the kind's rules accept it
    registry = DataRegistry("", cfg.data.sources)  # every source's options are valid
    assert {registry.family(f).kind for f in (*cfg.data.meta_train, cfg.data.meta_val, cfg.eval.target)} == {cfg.kind}
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any("metaray " in line for line in header), "each preset's header comment gives its launch command"


def test_overrides_are_typed():
    cfg = load_config(None, ["meta.inner.lr=1e-3", "data.n_way=3", "data.meta_train=[snips]", "model.pool_prompt=true"])
    assert cfg.meta.inner.lr == 1e-3 and cfg.data.n_way == 3
    assert cfg.data.meta_train == ("snips",) and cfg.model.pool_prompt is True


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("meta.innr_lr=1", "unknown key meta.innr_lr; did you mean meta.inner"),
        ("modle.backbone=x", "unknown key modle; did you mean model"),
        ("meta.inner.lr=abc", "meta.inner.lr must be a number"),
        ("data.n_way=2.5", "data.n_way must be an integer"),
        ("meta.algorithm=maml", "meta.algorithm must be one of"),
        ("meta.aggregation=star", "meta.aggregation must be one of"),
        ("ray.placement=pack", "ray.placement must be one of"),
        ("ray.resources_per_actor={trainer: 0}", "ray.resources_per_actor.trainer must be > 0"),
        ("ray.resources_per_actor={trainer: many}", "ray.resources_per_actor.trainer must be a number"),
        ("eval.methods=[reptil]", "did you mean 'reptile'"),
        ("data.k_shot=0", "data.k_shot must be >= 1"),
        ("meta", "must look like section.key=value"),
    ],
)
def test_bad_overrides_name_the_fix(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(None, [override])


def test_missing_data_dir_names_path_and_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("METARAY_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="data.data_dir"):
        load_config(None).data.resolved_dir()
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=str(missing)):
        load_config(None, [f"data.data_dir={missing}"]).data.resolved_dir()


def test_round_trip_through_dict():
    cfg = load_config(None, ["eval.checkpoints.reptile=runs/x", "data.meta_train=[snips]"])
    tree = to_dict(cfg)
    assert tree["eval"]["checkpoints"] == {"reptile": "runs/x"}
    assert build(ExperimentConfig, tree) == cfg


def test_sharded_meta_batch_must_divide_among_workers():
    with pytest.raises(ConfigError, match=r"meta.meta_batch_size=5 .* sharded.num_workers=2.*meta_batch_size=6"):
        load_config(None, ["sharded.enabled=true", "sharded.num_workers=2", "meta.meta_batch_size=5"])
    assert load_config(
        None, ["sharded.enabled=true", "sharded.num_workers=2", "meta.meta_batch_size=4"]
    ).sharded.enabled


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sharded.enabled=true", "ray.local=true"], "two different modes"),
        (["sharded.enabled=true", "meta.round_deadline_s=5"], "lockstep"),
        (["sharded.offload_params=true"], "use_gpu"),
        (["sharded.dtype=fp16"], "fp32"),
        # the task kind and its methods must agree
        (["kind=qaa"], "kind must be one of"),
        (["kind=qa"], "'protonet' is not a method for kind=qa .its methods: instruction, random, .*; set eval.methods"),
        (["kind=qa", "eval.methods=[random]"], "set eval.protocol=episodes"),
        (["kind=image", "eval.protocol=episodes", "eval.methods=[random]"], "set prompt.init=random"),
        (["kind=image", "eval.protocol=episodes", "prompt.init=random"], "'text' is not a method for kind=image"),
        (["eval.methods=[instruction]"], "'instruction' is not a method for kind=classify"),
        (
            [
                "kind=image",
                "eval.protocol=episodes",
                "eval.methods=[random]",
                "prompt.init=random",
                "sharded.enabled=true",
            ],
            "kind=image runs on actors",
        ),
        (["model.max_context_tokens=4"], "model.max_context_tokens must be >= 8"),
        (["meta.algorithm=reptile", "meta.consistency=1"], "reptile's pseudo-gradient .* never reads the query loss"),
        (["meta.inner.ridge_lambda=0"], "inner.ridge_lambda must be > 0"),
        (["eval.inner.loss=svm"], "inner.loss must be one of"),
        (["data.ways=[16, 1]"], "data.ways must all be >= 2"),
        (["data.ways=[16]", "data.same_domain=true"], "unset data.ways or data.same_domain"),
        (
            ["kind=qa", "eval.protocol=episodes", "eval.methods=[random]", "meta.algorithm=r2d2"],
            "meta.algorithm=r2d2 fits a classifier head .* kind=qa has no head",
        ),
        (
            ["kind=qa", "eval.protocol=episodes", "eval.methods=[random]", "meta.algorithm=fomaml"]
            + ["meta.consistency=1"],
            "meta.consistency compares .* kind=qa has not",
        ),
        (["kind=qa", "eval.protocol=episodes", "eval.methods=[r2d2]"], "'r2d2' is not a method for kind=qa"),
        (["eval.inner.views=2"], "eval.inner.views=2: kind=classify makes its copies with text edits"),
        (["meta.inner.augment.word_swaps=2"], "meta.inner.augment: edits make .* meta.inner.views=0 asks for none"),
        (["eval.inner.augment.token_dropout=0.9"], "token_dropout must be in \\[0, 0.5\\], got 0.9"),
        (["eval.inner.augment.word_swaps=9"], "word_swaps must be in \\[0, 8\\], got 9"),
        (["eval.inner.augment.synonyms=0.6"], "synonyms must be in \\[0, 0.5\\], got 0.6"),
        (["eval.inner.augment.synonym=0.1"], "unknown key eval.inner.augment.synonym"),
        (
            ["kind=qa", "eval.protocol=episodes", "eval.methods=[random]", "meta.inner.views=1"]
            + ["meta.inner.augment.synonyms=0.2"],
            "meta.inner.augment.synonyms: synonyms come from a sentence encoder's vocabulary .kind=classify.; kind=qa",
        ),
        (
            ["eval.inner.views=1", "eval.inner.augment.synonyms=0.2", "sharded.enabled=true"],
            "eval.inner.augment.synonyms reads the input-embedding table, which sharded mode partitions",
        ),
        (
            [
                "kind=image",
                "prompt.init=random",
                "eval.protocol=episodes",
                "eval.methods=[random]",
                "meta.inner.views=2",
            ]
            + ["meta.inner.augment.span_deletion=0.3"],
            "meta.inner.augment: text edits are for the text kinds .classify, qa.; unset them for kind=image",
        ),
        (
            ["kind=qa", "eval.protocol=episodes", "eval.methods=[random]", "meta.inner.views=2"],
            "meta.inner.views=2: kind=qa makes its copies with text edits",
        ),
        (["prompt.region=image"], "prompt.region is for visual prompts"),
        (["prompt.region=all"], "prompt.region must be one of"),
        (["meta.inner.views=-1"], "inner.views must be >= 0"),
        (["model.compute_dtype=float16"], "model.compute_dtype must be one of"),
        (["model.answer_decoding=beam"], "model.answer_decoding must be one of"),
        (["model.answer_decoding=span"], "span is for generated answers .kind=qa.; unset it for kind=classify"),
        (["model.compute_dtype=bf16"], "bf16 is for the causal LM .kind=qa.; unset it for kind=classify"),
        (["model.compute_dtype=auto"], "auto is for the causal LM .kind=qa.; unset it for kind=classify"),
        (
            [
                "kind=qa",
                "eval.protocol=episodes",
                "eval.methods=[random]",
                "model.compute_dtype=bf16",
                "sharded.enabled=true",
            ],
            "sharded.dtype=bf16",
        ),
    ],
)
def test_settings_that_cannot_work_together_are_refused(overrides, message):
    """Checked when the config loads, or by its kind's rules (`kind_of`, before any work)."""
    with pytest.raises(ConfigError, match=message):
        kind_of(load_config(None, overrides))


def test_resume_refuses_a_change_of_answer_decoding_and_reads_older_qa_checkpoints_as_greedy():
    """Meta-validation scores a QA run's answers and selects its best θ on them: a resumed
    run must read answers as the run it continues did. A checkpoint written before the
    setting existed read them greedily."""
    from metaray.distributed.driver import check_resumable

    saved = to_dict(load_config(ROOT / "configs" / "squad.yaml"))
    with pytest.raises(ConfigError, match=r"model.answer_decoding: checkpoint 'greedy', now 'span'"):
        check_resumable(load_config(ROOT / "configs" / "squad.yaml", ["model.answer_decoding=span"]), saved)
    del saved["model"]["answer_decoding"]
    check_resumable(load_config(ROOT / "configs" / "squad.yaml"), saved)


def test_files_written_before_the_registry_stay_readable():
    """A sweep's best.yaml and a checkpoint's config with the old flat data keys, and a
    checkpoint's best score under its old name."""
    from metaray.distributed.driver import best_score, check_resumable

    old = load_config(ROOT / "bench" / "results" / "tune" / "best.yaml")
    assert old.data.sources["clinc150"] == {"val_domains": ["work"], "test_domains": ["travel", "kitchen_and_dining"]}
    saved = to_dict(load_config(None))
    saved["data"] = {k: v for k, v in saved["data"].items() if k != "sources"}
    saved["data"] |= {"clinc150_val_domains": ["work"], "xquad_val_articles": 6, "omniglot_rotations": False}
    check_resumable(load_config(None), saved)  # no difference that matters to a resume
    assert best_score({"best_meta_val_acc": 91.5}) == 91.5 and best_score({"best_meta_val_score": 80.0}) == 80.0
