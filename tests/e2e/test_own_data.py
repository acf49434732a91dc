"""A user's own data through configuration alone: intent files (CSV, JSON Lines, Parquet),
SQuAD-format JSON Lines and an image folder, each written here, then `metaray data`, 2
rounds of `metaray train` and `metaray eval` with the shipped example configs; and bad
files refused with exit 2 before any Ray work."""

import json
import re

import datasets
import numpy as np
import pytest
import ray
from PIL import Image, ImageDraw

from metaray.cli import main

pytestmark = pytest.mark.integration

INTENTS = {  # domain -> intent -> templates
    "bank": {"balance": "what is the balance on my {} account", "transfer": "send money from my {} account",
             "card_lost": "i lost my {} card", "pin": "how do i change the pin of my {} card"},
    "travel": {"flight": "book a flight to {}", "hotel": "find a hotel in {}", "weather": "what is the weather in {}",
               "visa": "do i need a visa for {}"},
}  # fmt: skip
FILLERS = ["paris", "tokyo", "savings", "checking", "business", "lima", "oslo", "joint", "travel", "cairo"]


def intent_rows():
    return [
        {"utterance": template.format(filler), "intent": intent, "domain": domain}
        for domain, intents in INTENTS.items()
        for intent, template in intents.items()
        for filler in FILLERS
    ]


def write_intents(folder, fmt):
    rows = intent_rows()
    table = datasets.Dataset.from_list(rows)
    path = folder / f"intents.{fmt}"
    {"csv": table.to_csv, "jsonl": table.to_json, "parquet": table.to_parquet}[fmt](str(path))
    return path


def write_qa(folder):
    cities = ["paris", "tokyo", "lima", "oslo", "cairo", "rome", "quito", "accra"]
    path = folder / "faq.jsonl"
    with path.open("w") as out:
        for c, city in enumerate(cities):
            context = f"The city of {city} has a river called river{c} and a mountain called peak{c}."
            for q, (question, answer) in enumerate(
                [("Which river flows in {}?", f"river{c}"), ("Which mountain is near {}?", f"peak{c}"),
                 ("What is the river of {} called?", f"river{c}"), ("Name the mountain of {}.", f"peak{c}")]
            ):  # fmt: skip
                row = {"id": f"{city}-{q}", "title": city, "context": context, "question": question.format(city),
                       "answers": {"text": [answer], "answer_start": [context.index(answer)]}}  # fmt: skip
                out.write(json.dumps(row) + "\n")
    return path


def write_images(folder):
    """GROUP/CLASS/IMAGE: 3 groups of 2 shapes, 4 drawings each, PNG and JPEG, grey and RGB."""
    shapes = {"round": ["circle", "dot"], "sharp": ["square", "triangle"], "star": ["cross", "star"]}
    rng = np.random.default_rng(0)
    for group, names in shapes.items():
        for s, name in enumerate(names):
            (folder / group / name).mkdir(parents=True)
            for i in range(4):
                image = Image.new("RGB" if i % 2 else "L", (48, 48), "white")
                x, y = (int(v) for v in rng.integers(4, 12, 2))
                ImageDraw.Draw(image).regular_polygon((24 + x - 8, 24 + y - 8, 10 + s * 2), 3 + s + i % 2, fill="black")
                image.save(folder / group / name / f"{i}.{'png' if i < 2 else 'jpg'}")
    return folder


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


TINY_TEXT = ["data.n_way=2", "data.k_shot=2", "data.q_query=2", "meta.rounds=2", "meta.meta_batch_size=2",
             "meta.eval_every=2", "meta.val_episodes=2", "meta.val_steps=1", "meta.inner.steps=1", "prompt.length=2",
             "model.max_length=16", "eval.episodes=2", "eval.n_way=2", "eval.shots=[2]", "eval.q_query=2",
             "eval.steps=[0,1]", "eval.inner.steps=1", "ray.local=true", "output.tensorboard=false"]  # fmt: skip


def options(source, **values):
    return [f"data.sources.{source}.{key}={value}" for key, value in values.items()]


COLUMNS = options("mine", text_column="utterance", label_column="intent", val_classes=2, test_classes=2)
CASES = {
    "csv": ("configs/own-intents.yaml", [*COLUMNS, *options("mine", group_column="domain"), *TINY_TEXT]),
    "jsonl": ("configs/own-intents.yaml", [*COLUMNS, *options("mine", format="jsonl"), *TINY_TEXT]),
    "parquet": ("configs/own-intents.yaml", [*COLUMNS, *options("mine", format="parquet"), *TINY_TEXT]),
    "qa": ("configs/own-qa.yaml", ["data.k_shot=2", "data.q_query=1", "meta.rounds=2", "meta.eval_every=2",
           "meta.val_episodes=1", "meta.val_steps=1", "meta.inner.steps=1", "prompt.length=2",
           "model.max_context_tokens=48", "model.max_answer_tokens=4", "eval.episodes=2", "eval.shots=[2]",
           "eval.steps=[0,1]", "eval.inner.steps=1", "ray.local=true", "output.tensorboard=false"]),
    "images": ("configs/own-images.yaml", [
        *options("drawings", val_classes=0, test_classes=0, val_groups="[round]", test_groups="[star]"),
        "data.n_way=2", "data.k_shot=1", "data.q_query=2", "meta.rounds=2", "meta.meta_batch_size=2",
        "meta.eval_every=2", "meta.val_episodes=1", "meta.val_steps=1", "meta.inner.steps=1", "meta.inner.batch_ways=2",
        "model.image_size=40", "prompt.length=2", "eval.episodes=2", "eval.n_way=2", "eval.q_query=2",
        "eval.steps=[0,1]", "eval.inner.steps=1", "eval.inner.batch_ways=2", "ray.local=true",
        "output.tensorboard=false"]),
}  # fmt: skip


def written(case, folder):
    if case == "qa":
        return write_qa(folder)
    if case == "images":
        return write_images(folder / "drawings")
    return write_intents(folder, case)


@pytest.mark.parametrize("case", sorted(CASES))
def test_own_data_runs_data_train_and_eval_by_configuration(case, tmp_path, tiny_lm_dir, capsys):
    config, overrides = CASES[case]
    path = written(case, tmp_path)
    source = "faq" if case == "qa" else "drawings" if case == "images" else "mine"
    common = [f"data.sources.{source}.path={path}", f"output.dir={tmp_path / 'run'}", *overrides]
    common += [f"model.backbone={tiny_lm_dir}"] if case == "qa" else []
    code, table, err = run(capsys, "data", config, *common)
    assert code == 0, err + table
    assert f"| {source}/train | meta-train | " in table and "| ok |" in table
    code, out, err = run(capsys, "train", config, *common, "--quiet")
    assert code == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["rounds"] == 2
    code, out, err = run(capsys, "eval", config, *common, f"eval.checkpoints.reptile={tmp_path / 'run'}", "--quiet")
    assert code == 0, err[-3000:]
    assert "| reptile |" in out and "| random |" in out


@pytest.mark.parametrize(
    ("case", "bad", "message"),
    [
        ("csv", ["data.sources.mine.text_column=body"], "'body'.*columns.*utterance"),
        ("csv", ["data.sources.mine.label_column=domain", "data.sources.mine.val_classes=0",
                 "data.sources.mine.test_classes=0", "data.meta_train=[mine]", "data.meta_val=mine",
                 "eval.target=mine", "data.sources.mine.path=one_class.csv"], "a task needs at least 2"),
        ("csv", ["data.sources.mine.path=empty.csv"], "empty|no rows"),
        ("csv", ["data.meta_train=[mine/train, xquad/train]"], "'xquad/train' is a qa family, and kind=classify"),
        ("csv", ["data.n_way=5"], "n_way=5 but mine/(train|val) has only"),
        ("csv", ["data.k_shot=20"], "k_shot \\+ q_query = 22"),
        ("images", ["data.sources.drawings.path=broken"], "broken/sharp/square/0.png.*bad_images=skip"),
        ("csv", ["data.sources.mine.format=hub", "data.sources.mine.path=someone/intents"],
         "allow_download.*save_to_disk"),
    ],
)  # fmt: skip
def test_bad_data_exits_2_before_any_ray_work(case, bad, message, tmp_path, capsys):
    config, overrides = CASES[case]
    path = written(case, tmp_path)
    (tmp_path / "empty.csv").write_text("")
    rows = [{"utterance": f"text {i}", "domain": "only"} for i in range(6)]
    datasets.Dataset.from_list(rows).to_csv(str(tmp_path / "one_class.csv"))
    broken = tmp_path / "broken"
    write_images(broken)
    (broken / "sharp" / "square" / "0.png").write_bytes(b"not a png")
    source = "drawings" if case == "images" else "mine"
    overrides = [o for o in overrides if o != "ray.local=true"]  # Ray would start if the checks let it
    common = [f"data.data_dir={tmp_path}", f"data.sources.{source}.path={path}", *overrides, *bad]
    common += [f"output.dir={tmp_path / 'run'}"]
    for command in ("data", "train"):
        code, out, err = run(capsys, command, config, *common)
        assert code == 2, (command, out, err[-2000:])
        assert re.search(message, out + err), (command, out, err[-2000:])
    assert not ray.is_initialized()
