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
