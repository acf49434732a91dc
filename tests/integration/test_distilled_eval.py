"""Distillation in evaluation, on local Ray with real encoders: the teacher runs inside the
adapter actors, is scored on its own, and every student method gains a distilled head."""

import pytest

from metaray.config import load_config
from metaray.distributed import RayRunner
from metaray.eval import evaluate, format_table

pytestmark = pytest.mark.integration


def test_a_teacher_is_scored_alone_and_teaches_every_student_method_a_distilled_head(data_dir, tmp_path, ray_local):
    # the teacher here is MiniLM itself (no 440 MB download in CI); bench/distill uses all-mpnet-base-v2
    cfg = load_config(
        "configs/tiny.yaml",
        [
            f"data.data_dir={data_dir}",
            f"output.dir={tmp_path}",
            "eval.methods=[linear_probe,teacher,vocab]",
            "eval.episodes=3",
            "eval.steps=[0,2]",
            "distill.teacher=all-MiniLM-L6-v2",
            "distill.unlabeled=12",
            "ray.num_actors=1",
        ],
    )
    runner = RayRunner(cfg)
    try:
        methods = evaluate(cfg, runner, progress=False)["settings"]["3-way 1-shot"]
    finally:
        runner.shutdown()
    assert set(methods["teacher"]["heads"]) == {"probe"}
    assert set(methods["linear_probe"]["heads"]) == {"probe", "distilled"}
    assert set(methods["vocab"]["heads"]) == {"proto", "probe", "distilled"}
    assert set(methods["vocab"]["heads"]["distilled"]) == {"0", "2"}
    # the same frozen encoder and the same support: the teacher's probe is the student's, task by task
    teacher, student = methods["teacher"]["heads"]["probe"]["0"], methods["linear_probe"]["heads"]["probe"]["0"]
    assert teacher["values"] == student["values"] and teacher["n"] == 3
    assert "| teacher | probe |" in format_table({"settings": {"3-way 1-shot": methods}})
