"""metaray/core imports torch only (and the standard library); nothing points back up."""

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "metaray"


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_torch_only():
    allowed = {"torch", "metaray", "__future__"} | set(sys.stdlib_module_names)
    for path in (PACKAGE / "core").glob("*.py"):
        assert imports_of(path) <= allowed, f"{path.name} imports {imports_of(path) - allowed}"
    for path in (PACKAGE / "core").glob("*.py"):
        tree = ast.parse(path.read_text())
        inner = [
            n.module
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("metaray")
        ]
        assert all(m.startswith("metaray.core") for m in inner), f"{path.name} imports {inner}"


def test_lower_layers_do_not_import_upper_ones():
    upper = {"metaray.distributed", "metaray.tuning", "metaray.eval", "metaray.cli"}
    for layer in ("models", "data"):
        for path in (PACKAGE / layer).glob("*.py"):
            tree = ast.parse(path.read_text())
            mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert not {m for m in mods if any(m.startswith(u) for u in upper)}, path


def test_the_driver_knows_nothing_of_sweeps():
    """Trials run the ordinary driver: distributed/ must not import tuning/ (or the CLI)."""
    for path in (PACKAGE / "distributed").glob("*.py"):
        tree = ast.parse(path.read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in mods if m.startswith(("metaray.tuning", "metaray.cli"))}, path


def module_graph() -> dict[str, set[str]]:
    """metaray module -> the metaray modules it imports (at any level, lazily too)."""
    names = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}  # fmt: skip
    graph = {}
    for name, path in names.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            deps |= {t for t in targets if t in names and t != name}
        graph[name] = deps
    return graph


def test_no_import_cycles_inside_metaray():
    """A package importing its own submodules (`metaray.data` -> `metaray.data.sources`) is
    not a cycle; any other path back to a module is."""
    graph = module_graph()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for dep in graph[start]:
            if dep == goal or (dep not in seen and not seen.add(dep) and reaches(dep, goal, seen)):
                return True
        return False

    cycles = [
        (a, b) for a in graph for b in graph[a]
        if not b.startswith(a + ".") and not a.startswith(b + ".") and reaches(b, a, set())
    ]  # fmt: skip
    assert not cycles, f"import cycles through: {sorted(cycles)[:5]}"


def test_serving_never_imports_the_trainer():
    graph = module_graph()
    serving = [m for m in graph if m.startswith("metaray.serving")]
    assert serving and not {(m, d) for m in serving for d in graph[m] if d.startswith("metaray.distributed")}


def test_kinds_data_and_models_sit_below_the_runners():
    graph = module_graph()
    upper = ("metaray.distributed", "metaray.tuning", "metaray.serving", "metaray.eval", "metaray.cli")
    for module, deps in graph.items():
        if module.startswith(("metaray.kinds", "metaray.data.", "metaray.models", "metaray.core")):
            assert not {d for d in deps if d.startswith(upper)}, module
        if module.startswith(("metaray.data.", "metaray.models", "metaray.core")):
            assert not {d for d in deps if d.startswith("metaray.kinds")}, module


KIND_NAMES = {"classify", "qa", "image"}


def test_no_kind_name_is_compared_as_a_string_outside_the_kinds():
    """Everything kind-specific is asked of the kind object (`metaray.kinds`): no `== "qa"`,
    `in ("classify", ...)` or table keyed by kind names elsewhere."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "kinds" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            parts = [node.left, *node.comparators] if isinstance(node, ast.Compare) else []
            parts += [k for k in node.keys if k is not None] if isinstance(node, ast.Dict) else []
            if any(isinstance(s, ast.Constant) and s.value in KIND_NAMES for p in parts for s in ast.walk(p)):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, f"kind names compared outside metaray/kinds: {found}"


def test_the_cli_catches_one_base_error_class():
    from metaray.checkpoint import CheckpointError
    from metaray.config import ConfigError
    from metaray.data import DataError
    from metaray.distributed.zero import ShardedModeError
    from metaray.errors import MetarayError
    from metaray.models import ModelLoadError
    from metaray.runtime import ClusterUnreachable
    from metaray.serving.peft_export import ExportError
    from metaray.serving.store import TaskNotFound
    from metaray.storage import StorageError

    user_errors = (ConfigError, DataError, ModelLoadError, CheckpointError, ClusterUnreachable, StorageError,
                   ShardedModeError, TaskNotFound, ExportError)  # fmt: skip
    assert all(issubclass(e, MetarayError) for e in user_errors)
    handlers = [n for n in ast.walk(ast.parse((PACKAGE / "cli.py").read_text())) if isinstance(n, ast.ExceptHandler)]
    assert [ast.unparse(h.type) for h in handlers] == ["MetarayError"]


def test_the_task_service_speaks_no_http():
    """Task logic lives in serving/service.py (and its checks and errors), which import no
    web framework; api.py maps the service's refusals to status codes in one table."""
    for name in ("service", "checks", "errors", "store"):
        assert not imports_of(PACKAGE / "serving" / f"{name}.py") & {"fastapi", "starlette"}, name
