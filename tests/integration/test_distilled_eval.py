"""Distillation in evaluation, on local Ray with real encoders, for texts and images: the
teacher runs inside the adapter actors, is scored on its own, and every student method
gains a distilled head."""

import pytest

from metaray.config import load_config
from metaray.distributed import RayRunner
from metaray.eval import evaluate, format_table

pytestmark = pytest.mark.integration


KINDS = {  # the teacher is the student's own backbone here (no download in CI); bench/distill's are larger
    "text": ("configs/tiny.yaml", "all-MiniLM-L6-v2", "vocab", []),
    "image": ("configs/omniglot.yaml", "efficientnet-lite0", "random", ["model.image_size=40", "eval.n_way=3"]),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_teacher_is_scored_alone_and_teaches_every_student_method_a_distilled_head(
    kind, data_dir, tmp_path, ray_local
):
    config, teacher, prompted, extra = KINDS[kind]
    cfg = load_config(
        config,
        [
            f"data.data_dir={data_dir}",
            f"output.dir={tmp_path}",
            f"eval.methods=[linear_probe,teacher,{prompted}]",
            "eval.episodes=3",
            "eval.steps=[0,2]",
            f"distill.teacher={teacher}",
            "distill.unlabeled=12",
            "ray.num_actors=1",
            *extra,
        ],
    )
    runner = RayRunner(cfg)
    try:
        settings = evaluate(cfg, runner, progress=False)["settings"]
    finally:
        runner.shutdown()
    assert list(settings) == ["3-way 1-shot"]
    methods = settings["3-way 1-shot"]
    assert set(methods["teacher"]["heads"]) == {"probe"}
    assert set(methods["linear_probe"]["heads"]) == {"probe", "distilled"}
    assert set(methods[prompted]["heads"]) == {"proto", "probe", "distilled"}
    assert set(methods[prompted]["heads"]["distilled"]) == {"0", "2"}
    # the same frozen encoder and the same support: the teacher's probe is the student's, task by task
    taught, student = methods["teacher"]["heads"]["probe"]["0"], methods["linear_probe"]["heads"]["probe"]["0"]
    assert taught["values"] == student["values"] and taught["n"] == 3
    assert "| teacher | probe |" in format_table({"settings": {"3-way 1-shot": methods}})
