"""`metaray data CONFIG`: what a config's task families hold and whether its episode shapes fit.

For each family the config names (meta-train, meta-val, the eval target and the family its
support set comes from) and the other parts of their sources: kind, classes (or articles),
examples per class (or questions per article) as min / median / max, groups, and whether
the configured shapes can be drawn. Problems are listed by family; the command exits 2
when there is one, before any Ray work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaray.config import ExperimentConfig
from metaray.data import Corpus, DataRegistry
from metaray.errors import MetarayError
from metaray.kinds import kind_of


@dataclass
class FamilyRow:
    family: str
    roles: list[str]
    kind: str = ""
    units: str = ""  # "150 classes" | "32 articles"
    per_unit: str = ""  # examples per class (questions per article): min / median / max
    groups: int = 0
    problem: str = ""


def _sizes(loaded) -> tuple[str, np.ndarray, int]:
    if isinstance(loaded, Corpus):
        counts = np.bincount(loaded.labels, minlength=len(loaded.label_names))
        return f"{len(loaded.label_names)} classes", counts, len(np.unique(loaded.class_groups))
    counts = np.array([len(a.items) for a in loaded])
    return f"{len(loaded)} articles", counts, 0


def _describe(registry: DataRegistry, row: FamilyRow) -> None:
    family = registry.family(row.family)
    row.kind = family.kind
    row.units, counts, row.groups = _sizes(registry.load(row.family))
    if len(counts):
        row.per_unit = f"{counts.min()} / {int(np.median(counts))} / {counts.max()}"


def _checks(cfg: ExperimentConfig, registry: DataRegistry) -> dict[str, list]:
    """Per role, (family, the check that raises if its shapes do not fit)."""
    kind, d = kind_of(cfg), cfg.data
    needed = d.k_shot + d.q_query
    checks = {
        "meta-train": [(f, lambda f=f: kind.family_size(registry, f, d.n_way, d.k_shot, needed, d.same_domain))
                       for f in d.meta_train],
        "meta-val": [(d.meta_val, lambda: kind.family_size(registry, d.meta_val, d.n_way, d.k_shot, needed))],
        "eval target": [(cfg.eval.target, lambda: kind.check_target(registry, cfg.eval))],
    }  # fmt: skip
    return checks


def family_rows(cfg: ExperimentConfig) -> list[FamilyRow]:
    """One row per family the config names, then the other families of their sources."""
    registry = DataRegistry.from_config(cfg.data)
    rows: dict[str, FamilyRow] = {}
    for role, checks in _checks(cfg, registry).items():
        for name, check in checks:
            row = rows.setdefault(name, FamilyRow(name, []))
            row.roles.append(role)
            try:
                check()
            except MetarayError as err:
                row.problem = row.problem or str(err)
    known = {f.name: f for f in registry.families()}
    for name in [n for n in rows if n in known]:
        support = known[name].support
        if support and "eval target" in rows[name].roles:
            rows.setdefault(support, FamilyRow(support, [])).roles.append("eval support")
    used = {known[name].source for name in rows if name in known}
    for family in known.values():
        if family.source in used and family.name not in rows:
            rows[family.name] = FamilyRow(family.name, ["-"])
    for row in rows.values():
        try:
            _describe(registry, row)
        except MetarayError as err:
            row.problem = row.problem or str(err)
    return list(rows.values())


def format_rows(rows: list[FamilyRow]) -> str:
    head = "| family | role | kind | size | per class / article (min / median / max) | groups | shapes |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = "-" if r.roles == ["-"] else ("ok" if not r.problem else "NO")
        lines.append(
            f"| {r.family} | {', '.join(r.roles)} | {r.kind} | {r.units} | {r.per_unit} | {r.groups or ''} | {ok} |"
        )
    problems = [f"{r.family}: {r.problem}" for r in rows if r.problem]
    return "\n".join(lines + ([""] + ["problems:"] + [f"  {p}" for p in problems] if problems else []))
