"""Sharded mode without DeepSpeed names the extra to install, before anything starts;
DeepSpeed is imported in one module only."""

import ast
import sys
from pathlib import Path

import pytest

from metaray.cli import main
from metaray.distributed.zero import ShardedModeError, check_deepspeed, deepspeed_config, import_deepspeed

PACKAGE = Path(__file__).resolve().parents[2] / "metaray"


@pytest.fixture
def no_deepspeed(monkeypatch):
    """What Python does for a module that cannot be imported (None in sys.modules)."""
    monkeypatch.setitem(sys.modules, "deepspeed", None)


def test_missing_deepspeed_names_the_extra(no_deepspeed):
    with pytest.raises(ShardedModeError, match=r"pip install 'metaray\[deepspeed\]'"):
        check_deepspeed()
    with pytest.raises(ImportError, match=r"metaray\[deepspeed\]"):
        import_deepspeed()


def test_cli_refuses_sharded_mode_without_deepspeed_before_ray_starts(no_deepspeed, data_dir, tmp_path, capsys):
    import ray

    ray_before = ray.is_initialized()  # the integration tests' Ray may be up already
    code = main(
        ["train", "configs/tiny.yaml", f"data.data_dir={data_dir}", f"output.dir={tmp_path}", "sharded.enabled=true"]
    )
    assert code == 2
    assert "metaray[deepspeed]" in capsys.readouterr().err
    assert ray.is_initialized() == ray_before


def test_deepspeed_is_imported_in_one_module_only():
    importers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "deepspeed" for name in names):
                importers.add(path.relative_to(PACKAGE).as_posix())
    assert importers == {"distributed/zero.py"}


def test_zero3_config_holds_nothing_trainable_and_follows_the_settings():
    from metaray.config import ShardedConfig

    plain = deepspeed_config(ShardedConfig())
    assert plain["zero_optimization"]["stage"] == 3
    assert "optimizer" not in plain and not plain["bf16"]["enabled"]
    gpu = deepspeed_config(ShardedConfig(use_gpu=True, dtype="bf16", offload_params=True))
    assert gpu["bf16"]["enabled"] and gpu["zero_optimization"]["offload_param"]["device"] == "cpu"
