"""Readers for a user's own data files: tables -> corpora, QA files, image folders."""

from __future__ import annotations

import io
import json
import zipfile

import datasets
import numpy as np
import pytest
from PIL import Image

from metaray.data.files import read_image_folder, read_qa, read_table, table_corpus
from metaray.data.sources import DataError

ROWS = {
    "text": ["card arrived?", "lost my card", "", "top up failed", "where is my card"],
    "label": ["card_arrival", "lost_card", "card_arrival", "top_up", "card_arrival"],
    "group": ["cards", "cards", "cards", "payments", "cards"],
}
LINES = list(zip(*ROWS.values(), strict=True))


def write_table(tmp_path, fmt):
    table = datasets.Dataset.from_dict(ROWS)
    if fmt == "datasets":
        datasets.DatasetDict({"train": table, "test": table.select([0])}).save_to_disk(tmp_path / "saved")
        return str(tmp_path / "saved")
    path = tmp_path / f"rows.{fmt}"
    if fmt == "parquet":
        table.to_parquet(str(path))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(dict(zip(ROWS, r, strict=True))) + "\n" for r in LINES))
    else:
        sep = "," if fmt == "csv" else "\t"
        path.write_text("\n".join(sep.join(r) for r in [list(ROWS), *LINES]) + "\n")
    return str(path)


def corpus(table, **columns):
    return table_corpus("mine", table, **{"text_column": "text", "label_column": "label", **columns}, source="mine")


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet", "datasets"])
def test_every_table_format_gives_the_same_corpus(tmp_path, fmt):
    c = corpus(read_table(write_table(tmp_path, fmt), fmt, source="mine"), group_column="group")
    assert c.inputs == ("card arrived?", "lost my card", "top up failed", "where is my card")  # the empty text dropped
    assert c.label_names == ("card arrival", "lost card", "top up")
    assert c.labels.tolist() == [0, 1, 2, 0] and c.labels.dtype == np.int64
    assert c.class_groups.tolist() == [0, 0, 1] and c.class_groups.dtype == np.int64


def test_table_from_a_file_uri_without_groups(tmp_path, monkeypatch):
    monkeypatch.setenv("METARAY_CACHE", str(tmp_path / "cache"))
    c = corpus(read_table(f"file://{write_table(tmp_path, 'csv')}", "csv", source="mine"))
    assert len(c.inputs) == 4 and c.class_groups.tolist() == [0, 0, 0]


def test_bad_columns_and_classes_are_refused(tmp_path):
    table = datasets.Dataset.from_dict(ROWS)
    with pytest.raises(DataError, match=r"data\.sources\.mine\.text_column='body'.*\['text', 'label', 'group'\]"):
        corpus(table, text_column="body")
    with pytest.raises(DataError, match="label column 'label' has 1 class.*card_arrival"):
        corpus(table.filter(lambda r: r["label"] == "card_arrival"))
    with pytest.raises(DataError, match="class 'card_arrival' is in groups 'cards' and 'payments'"):
        corpus(
            table.map(lambda r, i: {"group": "payments" if i == 4 else r["group"]}, with_indices=True),
            group_column="group",
        )


def test_missing_empty_and_unparseable_files_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv not found; set data\.sources\.mine\.path"):
        read_table(str(tmp_path / "nope.csv"), "csv", source="mine")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv is empty"):
        read_table(str(tmp_path / "empty.csv"), "csv", source="mine")
    (tmp_path / "header.tsv").write_text("text\tlabel\n\n")
    with pytest.raises(DataError, match=r"header\.tsv has no rows"):
        read_table(str(tmp_path / "header.tsv"), "tsv", source="mine")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all" * 10)
    with pytest.raises(DataError, match=r"bad\.parquet cannot be read as parquet"):
        read_table(str(tmp_path / "bad.parquet"), "parquet", source="mine")
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad\.jsonl cannot be read as jsonl"):
        read_table(str(tmp_path / "bad.jsonl"), "jsonl", source="mine")


def test_hub_ids_need_allow_download(monkeypatch):
    with pytest.raises(DataError, match=r"downloads are off.*allow_download=true.*save_to_disk.*format: datasets"):
        read_table("org/intents", "hub", source="mine")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"cannot download 'org/intents'.*no network.*allow_download.*save_to_disk"):
        read_table("org/intents", "hub", source="mine", allow_download=True)


CONTEXT = "Paris is the capital of France. Berlin is the capital of Germany."


def test_squad_json_and_qa_lines(tmp_path):
    qa = {"id": "q1", "question": "Capital of France?", "answers": [{"text": "Paris", "answer_start": 0}]}
    squad = {"data": [{"title": "Capitals", "paragraphs": [{"context": CONTEXT, "qas": [qa]}]}]}
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    [article] = read_qa(str(tmp_path / "squad.json"), source="mine")
    assert article.title == "Capitals" and article.items[0].answers == ("Paris",)
    rows = [
        {"id": "a", "title": "T", "context": CONTEXT, "question": "France?", "answers": ["Paris"], "answer_start": 0},
        {
            "context": "Rome is in Italy.",
            "question": "Italy?",
            "answers": {"text": ["Rome", "Rome"], "answer_start": [0, 0]},
        },
        {
            "title": "T",
            "context": CONTEXT,
            "question": "Germany?",
            "answers": {"text": ["Berlin"], "answer_start": [32]},
        },
    ]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    titled, untitled = read_qa(str(tmp_path / "qa.jsonl"), source="mine")
    assert titled.title == "T" and [i.id for i in titled.items] == ["a", "mine-2"]
    assert [(i.answers, i.answer_start) for i in titled.items] == [(("Paris",), 0), (("Berlin",), 32)]
    assert untitled.title == "mine/context-0" and untitled.items[0].id == "mine-1"
    assert untitled.items[0].answers == ("Rome",) and untitled.items[0].context == "Rome is in Italy."


def test_bad_qa_files_are_refused(tmp_path):
    def write(rows):
        (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(tmp_path / "qa.jsonl")

    row = {"id": "q7", "context": CONTEXT, "question": "France?", "answers": ["Paris"], "answer_start": 3}
    with pytest.raises(DataError, match="question q7: answer 'Paris' is not in its context at 3"):
        read_qa(write([row]), source="mine")
    with pytest.raises(DataError, match=r"no column\(s\) \['answers'\]; columns present: \['context', 'question'\]"):
        read_qa(write([{"context": CONTEXT, "question": "?"}]), source="mine")
    with pytest.raises(DataError, match="is empty"):
        read_qa(write([]), source="mine")


def image_bytes(mode, fmt, seed):
    rng = np.random.default_rng(seed)
    shape = (30, 40, 3) if mode == "RGB" else (30, 40)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(out, fmt)
    return out.getvalue()


FILES = {
    "a/x.png": image_bytes("RGB", "PNG", 0),
    "a/y.jpg": image_bytes("L", "JPEG", 1),
    "b/z.png": image_bytes("L", "PNG", 2),
    "b/w.jpg": image_bytes("RGB", "JPEG", 3),
    "b/notes.txt": b"not an image",
    "b/.DS_Store": b"\0\0",
}


def write_folder(root, files):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return str(root)


def test_image_folder_and_zip_with_a_wrapping_folder(tmp_path):
    folder = read_image_folder(write_folder(tmp_path / "imgs", FILES), source="mine")
    assert folder.keys == ("a/x.png", "a/y.jpg", "b/w.jpg", "b/z.png") and folder.skipped == ()
    assert folder.classes == ("a", "a", "b", "b") and folder.groups == ("", "", "", "")
    assert all(p.shape == (105, 105) and p.dtype == np.uint8 for p in folder.pixels.values())
    for key in ("a/x.png", "b/w.jpg"):  # RGB -> the grayscale values Pillow gives
        expected = Image.open(io.BytesIO(FILES[key])).convert("L").resize((105, 105), Image.Resampling.BILINEAR)
        np.testing.assert_array_equal(folder.pixels[key], np.asarray(expected))
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as archive:
        for name, data in FILES.items():
            archive.writestr(f"images_background/{name}", data)
        archive.writestr("__MACOSX/images_background/a/._x.png", b"junk")
    zipped = read_image_folder(str(tmp_path / "imgs.zip"), source="mine")
    assert zipped.keys == folder.keys and zipped.classes == folder.classes
    assert all(np.array_equal(zipped.pixels[k], folder.pixels[k]) for k in folder.keys)


def test_group_class_image_folder(tmp_path):
    files = {
        f"{g}/{c}/{i}.png": image_bytes("L", "PNG", i) for g, c in [("Greek", "alpha"), ("Latin", "a")] for i in (1, 2)
    }
    folder = read_image_folder(write_folder(tmp_path, files), source="mine")
    assert folder.keys == ("Greek/alpha/1.png", "Greek/alpha/2.png", "Latin/a/1.png", "Latin/a/2.png")
    assert (
        folder.classes == ("Greek/alpha",) * 2 + ("Latin/a",) * 2 and folder.groups == ("Greek",) * 2 + ("Latin",) * 2
    )


def test_bad_image_folders(tmp_path):
    root = write_folder(tmp_path / "imgs", {**FILES, "b/broken.png": b"\x89PNG garbage"})
    with pytest.raises(DataError, match=r"imgs/b/broken\.png is not an image.*data\.sources\.mine\.bad_images=skip"):
        read_image_folder(root, source="mine")
    folder = read_image_folder(root, source="mine", bad_images="skip")
    assert folder.skipped == ("b/broken.png",) and len(folder.keys) == 4
    with pytest.raises(DataError, match="CLASS/IMAGE or all at GROUP/CLASS/IMAGE"):
        read_image_folder(write_folder(tmp_path / "mixed", {**FILES, "g/c/i.png": FILES["a/x.png"]}), source="mine")
    with pytest.raises(DataError, match="1 class"):
        read_image_folder(write_folder(tmp_path / "one", {"a/x.png": FILES["a/x.png"]}), source="mine")
    with pytest.raises(DataError, match="not found"):
        read_image_folder(str(tmp_path / "none.zip"), source="mine")
