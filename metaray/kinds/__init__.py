"""One object per task kind: everything kind-specific is asked of it.

A kind holds its config rules, backbone check and loader, prompted model, metrics and
the one meta-validation selects on, its families' tasks and episodes, the meta-test
protocol's tasks and setting names, and the serving settings and input field. Nobody
else compares kind names (a test checks this).
"""

from __future__ import annotations

from metaray.config import ConfigError, ExperimentConfig
from metaray.kinds.classify import CLASSIFY
from metaray.kinds.image import IMAGE
from metaray.kinds.qa import QA

KINDS = {kind.name: kind for kind in (CLASSIFY, QA, IMAGE)}


def kind_named(name: str):
    """The kind object called `name`."""
    if name not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {name!r}")
    return KINDS[name]


def kind_of(cfg: ExperimentConfig):
    """`cfg`'s kind, after its rules accept `cfg` (ConfigError naming the setting otherwise)."""
    kind = kind_named(cfg.kind)
    kind.check_config(cfg)
    return kind


__all__ = ["CLASSIFY", "IMAGE", "KINDS", "QA", "kind_named", "kind_of"]
