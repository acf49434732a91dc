"""A sweep is refused before any trial starts where its space or metric is wrong."""

import dataclasses
import re
from pathlib import Path

import pytest

from metaray.config import ConfigError
from metaray.tuning import check_sweep, load_sweep, trial_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "tune_configs").glob("*.yaml"))


@pytest.fixture
def spec():
    return load_sweep(ROOT / "tune_configs" / "tiny.yaml")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_sweep_checks(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    space = check_sweep(load_sweep(path))
    assert space


def test_trial_values_become_config_values(spec, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = trial_config(spec, {"meta.inner.lr": 0.02, "meta.outer_lr": 0.3})
    assert cfg.meta.inner.lr == 0.02 and cfg.meta.outer_lr == 0.3 and cfg.meta.rounds == 3


@pytest.mark.parametrize(
    ("space", "metric", "message"),
    [
        ({}, "meta_val_score", "space is empty"),
        ({"meta.innr_lr": {"uniform": [0, 1]}}, "meta_val_score", "space.meta.innr_lr = 0: unknown key meta.innr_lr"),
        (
            {"meta.inner.lr": {"loguniform": [0, 1]}},
            "meta_val_score",
            "space.meta.inner.lr: loguniform [0, 1] is empty or invalid",
        ),
        ({"meta.inner.lr": {"gaussian": [0, 1]}}, "meta_val_score", "unknown distribution 'gaussian'"),
        ({"meta.inner.lr": {"uniform": [1, 0.5]}}, "meta_val_score", "space.meta.inner.lr: uniform [1, 0.5] is empty"),
        ({"prompt.length": {"choice": []}}, "meta_val_score", "space.prompt.length: choice needs a non-empty list"),
        (
            {"prompt.length": {"choice": [4, 0]}},
            "meta_val_score",
            "space.prompt.length = 0: prompt.length must be >= 1",
        ),
        ({"meta.inner.lr": {"uniform": [0.1, 1]}}, "accuracy", "metric 'accuracy' is never reported"),
    ],
)
def test_bad_sweeps_are_refused_naming_the_entry(spec, monkeypatch, space, metric, message):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_sweep(dataclasses.replace(spec, space=space, metric=metric))


def test_a_trials_bundles_reserve_what_its_adapters_ask_where_the_config_places_them():
    """The trial's placement group holds its adapters (they stay in it: `adapter_strategy`
    gives them no strategy of their own there), so it carries `ray.placement` and
    `ray.resources_per_actor` itself."""
    from metaray.config import load_config
    from metaray.tuning.sweep import trial_resources

    spread = trial_resources(load_config(None, ["ray.placement=spread", "ray.resources_per_actor={trainer: 1}"]))
    assert spread.strategy == "SPREAD"
    assert spread.bundles == [{"CPU": 1.0, "trainer": 1.0}] * 2  # (the trial's own bundle is empty)
    assert trial_resources(load_config(None, [])).strategy == "PACK"
