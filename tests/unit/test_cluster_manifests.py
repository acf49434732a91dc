"""The cluster/ files are valid for the Ray in this environment, and every command they
run is a metaray command whose config loads."""

import shlex
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv

from metaray.cli import parse_args
from metaray.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY = sorted((CLUSTER / "kuberay").glob("*.yaml"))


def test_launcher_config_passes_rays_schema():
    config = prepare_config(yaml.safe_load((CLUSTER / "launcher.yaml").read_text()))
    validate_config(config)
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    gpu = [t for t in config["available_node_types"].values() if t.get("resources", {}).get("GPU")]
    assert gpu and all(t["min_workers"] == 0 for t in gpu), "the GPU group must scale from zero"
    start = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert start.count("RAY_AUTH_MODE=token") == 2


def test_runtime_env_file_is_a_valid_runtime_env():
    env = RuntimeEnv(**yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text()))
    assert env["working_dir"] == "." and ".venv" in env["excludes"]


def test_image_and_kuberay_manifests_pin_this_ray():
    assert f"FROM rayproject/ray:{ray.__version__}-" in (CLUSTER / "Dockerfile").read_text()
    assert KUBERAY, "no KubeRay manifests"
    for path in KUBERAY:
        manifest = yaml.safe_load(path.read_text())
        spec = manifest["spec"]
        cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
        assert manifest["apiVersion"] == "ray.io/v1", path.name
        assert cluster["rayVersion"] == ray.__version__, path.name
        assert cluster["authOptions"] == {"mode": "token"}, path.name


@pytest.mark.parametrize("path", [p for p in KUBERAY if "entrypoint" in p.read_text()], ids=lambda p: p.name)
def test_job_entrypoints_are_metaray_commands_with_valid_configs(path):
    argv = shlex.split(yaml.safe_load(path.read_text())["spec"]["entrypoint"])
    assert argv[0] == "metaray"
    args = parse_args(argv[1:])
    cfg = load_config(ROOT / args.config, args.overrides)
    assert cfg.ray.gpus_per_actor > 0, "a GPU cluster job should give its actors GPUs"


SERVE_CONFIGS = {
    "serve/config.yaml": yaml.safe_load((ROOT / "serve" / "config.yaml").read_text()),
    "kuberay/rayservice.yaml": yaml.safe_load(
        yaml.safe_load((CLUSTER / "kuberay" / "rayservice.yaml").read_text())["spec"]["serveConfigV2"]
    ),
}


@pytest.mark.parametrize("name", SERVE_CONFIGS)
def test_serve_configs_pass_serves_schema_and_their_args_load(name):
    from ray.serve.schema import ServeDeploySchema

    from metaray.serving.app import Answerer, Classifier, api, settings_from

    config = ServeDeploySchema.model_validate(SERVE_CONFIGS[name])
    (app,) = config.applications
    assert app.import_path == "metaray.serving.app:build_app"
    settings_from(app.args)  # unknown keys or bad values fail here
    names = {d.name for d in app.deployments}
    assert {Classifier.name, api.name} <= names <= {Classifier.name, Answerer.name, "ImageClassifier", api.name}
    classifier = next(d for d in app.deployments if d.name == "Classifier")
    assert classifier.autoscaling_config["max_replicas"] > classifier.autoscaling_config["min_replicas"] >= 1


def test_the_local_serve_config_binds_to_loopback():
    assert SERVE_CONFIGS["serve/config.yaml"]["http_options"]["host"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "needs checkpoint .classification., qa_checkpoint .question answering. or image_checkpoint"),
        ({"qa_checkpoint": "runs/qa", "long_context": "cut"}, "long_context must be one of"),
        ({"checkpoint": "runs/demo", "qa_adapt": {"stepz": 2}}, "unknown key qa_adapt.stepz"),
        ({"checkpoint": "runs/demo", "adapt": {"views": 2}}, "adapt.views=2: kind=classify makes its copies with text"),
        ({"checkpoint": "runs/demo", "qa_adapt": {"views": 2}}, "qa_adapt.views=2: kind=qa makes its copies with text"),
        ({"checkpoint": "runs/demo", "qa_adapt": {"loss": "ridge"}}, "qa_adapt.loss=ridge .* kind=qa has none"),
        (
            {"checkpoint": "runs/demo", "image_adapt": {"augment": {"word_swaps": 1}}},
            "image_adapt.augment: text edits are for the text kinds .classify, qa.; unset them for kind=image",
        ),
    ],
)
def test_serve_settings_that_cannot_work_are_refused(args, message):
    from metaray.config import ConfigError
    from metaray.serving.app import settings_from

    with pytest.raises(ConfigError, match=message):
        settings_from(args)
