"""A user's own data files -> tables, labelled corpora, QA articles and image folders.

Every reader takes a local path or an object-storage URI (`s3://bucket/x.csv`: the
file's folder is copied once per machine, see `metaray.storage.local_copy`) and the
name of the `data.sources.<source>` entry it serves, so that every `DataError` names
the file and the setting to change. Nothing is downloaded unless a source allows it.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from metaray.data.sources import Corpus, DataError, make_corpus, readable_label
from metaray.data.squad import Article, QAItem, load_squad
from metaray.storage import is_uri, local_copy

TABLE_FORMATS = ("csv", "tsv", "jsonl", "parquet", "datasets", "hub")
BAD_IMAGES = ("refuse", "skip")
IMAGE_SIZE = 105  # Omniglot's drawings: every image is resized to IMAGE_SIZE x IMAGE_SIZE
NOT_IMAGES = (".txt", ".json", ".jsonl", ".csv", ".tsv", ".md", ".yaml", ".yml", ".zip", ".parquet", ".db", ".ini")
_PARSE_ERRORS = (datasets.exceptions.DatasetsError, pa.ArrowException, ValueError, OSError)


def _setting(source: str, key: str) -> str:
    return f"data.sources.{source}.{key}" if source else key


def _local_folder(location: str, source: str, shown: str = "") -> Path:
    """A local folder for a path or a folder URI (copied once per machine); `shown`: the
    user's file URI inside that folder, for messages."""
    if not is_uri(location):
        return Path(location).expanduser()
    try:
        return local_copy(location)
    except (OSError, pa.ArrowException) as err:
        what = f"the folder of {shown}" if shown else location
        raise DataError(f"cannot copy {what} ({err}); set {_setting(source, 'path')} to a reachable location") from err


def _local_file(location: str, source: str) -> Path:
    """A local path for a file path or file URI (its parent folder is copied)."""
    if not is_uri(location):
        return Path(location).expanduser()
    parent, _, name = location.rstrip("/").rpartition("/")
    return _local_folder(parent, source, shown=location) / name


def _existing_file(location: str, source: str, what: str) -> Path:
    """The local copy of a non-empty file; DataError for a missing or 0-byte one."""
    path = _local_file(location, source)
    if not path.is_file():
        raise DataError(f"{location} not found; set {_setting(source, 'path')} to an existing {what}")
    if path.stat().st_size == 0:
        raise DataError(f"{location} is empty (0 bytes); fill it or point {_setting(source, 'path')} at another file")
    return path


# ---------------------------------------------------------------- tables


def read_table(
    location: str, fmt: str, *, source: str, hub_split: str = "train", allow_download: bool = False
) -> datasets.Dataset:
    """A table (rows x named columns) from a csv/tsv/jsonl/parquet file, a `save_to_disk`
    folder (`datasets`; a DatasetDict's `hub_split`) or a Hub id (`hub`, only with
    `allow_download`). DataError for a missing, empty or unparseable file."""
    datasets.disable_progress_bars()
    if fmt not in TABLE_FORMATS:
        raise DataError(f"{_setting(source, 'format')}={fmt!r} is not a table format; use one of {TABLE_FORMATS}")
    if fmt == "hub":
        table = _hub_table(location, source, hub_split, allow_download)
    elif fmt == "datasets":
        table = _saved_table(location, source, hub_split)
    else:
        table = _file_table(location, fmt, source)
    if len(table) == 0:
        raise DataError(f"{location} has no rows; fill it or point {_setting(source, 'path')} at another table")
    return table


def _file_table(location: str, fmt: str, source: str) -> datasets.Dataset:
    path = str(_existing_file(location, source, f"{fmt} file"))
    if fmt != "parquet" and not _has_lines(path, 2 if fmt in ("csv", "tsv") else 1):  # a header, then rows
        raise DataError(f"{location} has no rows; fill it or point {_setting(source, 'path')} at another table")
    readers: dict[str, Callable[[], datasets.Dataset]] = {
        "csv": lambda: datasets.Dataset.from_csv(path, sep=",", keep_in_memory=True),
        "tsv": lambda: datasets.Dataset.from_csv(path, sep="\t", keep_in_memory=True),
        "jsonl": lambda: datasets.Dataset.from_json(path, keep_in_memory=True),
        "parquet": lambda: datasets.Dataset.from_parquet(path, keep_in_memory=True),
    }
    try:
        return readers[fmt]()
    except _PARSE_ERRORS as err:
        cause = err.__cause__ or err
        raise DataError(
            f"{location} cannot be read as {fmt} ({type(cause).__name__}: {cause}); fix the file or set "
            f"{_setting(source, 'format')} to its real format (one of {TABLE_FORMATS})"
        ) from err


def _has_lines(path: str, count: int) -> bool:
    """Whether a text file has at least `count` non-blank lines (reads no further)."""
    with open(path, "rb") as f:
        for line in f:
            count -= bool(line.strip())
            if count <= 0:
                return True
    return False


def _saved_table(location: str, source: str, split: str) -> datasets.Dataset:
    folder = _local_folder(location, source)
    if not folder.is_dir():
        raise DataError(f"{location} not found; set {_setting(source, 'path')} to a folder written by save_to_disk")
    try:
        saved = datasets.load_from_disk(str(folder), keep_in_memory=True)
    except _PARSE_ERRORS as err:
        raise DataError(f"{location} is not a folder written by Dataset.save_to_disk ({err})") from err
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise DataError(f"{location} has splits {list(saved)}, not {split!r}; set {_setting(source, 'hub_split')}")
        saved = saved[split]
    return saved


def _hub_table(hub_id: str, source: str, split: str, allow_download: bool) -> datasets.Dataset:
    remedies = (
        f"set {_setting(source, 'allow_download')}=true on a machine with network, or save it there with "
        f"datasets.load_dataset({hub_id!r}, split={split!r}).save_to_disk(FOLDER) and use format: datasets "
        f"with {_setting(source, 'path')}=FOLDER"
    )
    if not allow_download:
        raise DataError(f"source {source!r} names the Hugging Face Hub id {hub_id!r} but downloads are off; {remedies}")
    try:
        loaded = datasets.load_dataset(hub_id, split=split)
    except Exception as err:  # no network, unknown id, gated, ...: the message carries the cause
        raise DataError(f"cannot download {hub_id!r} (split {split!r}) from the Hub ({err}); {remedies}") from err
    return loaded


def table_corpus(
    name: str, table: datasets.Dataset, *, text_column: str, label_column: str, group_column: str = "", source: str = ""
) -> Corpus:
    """A Corpus of the table's texts, labels (N,) int64 indexing label names sorted by raw
    label, and class groups (C,) int64 (all 0 without `group_column`). Rows with an empty
    text or no label are dropped."""
    columns = {"text_column": text_column, "label_column": label_column, "group_column": group_column}
    for key, column in columns.items():
        if column and column not in table.column_names:
            raise DataError(
                f"{_setting(source, key)}={column!r}: no such column in {name}; columns present: {table.column_names}"
            )
    groups_of = table[group_column] if group_column else [""] * len(table)
    rows = [
        (str(text), str(label), str(group))
        for text, label, group in zip(table[text_column], table[label_column], groups_of, strict=True)
        if text is not None and str(text).strip() and label is not None
    ]
    raw = sorted({label for _, label, _ in rows})
    if len(raw) < 2:
        raise DataError(
            f"{name}: label column {label_column!r} has {len(raw)} class(es) {raw} in rows with text; a task needs "
            f"at least 2: set {_setting(source, 'label_column')} to the column holding the classes"
        )
    names = tuple(readable_label(n) for n in raw)
    if len(set(names)) < len(names):
        clash = sorted(r for r in raw if names.count(readable_label(r)) > 1)
        raise DataError(f"{name}: labels {clash} in column {label_column!r} read the same; rename them apart")
    group_of = _class_groups(name, rows) if group_column else None
    return make_corpus(name, [(t, label) for t, label, _ in rows], raw, group_of)


def _class_groups(name: str, rows: list[tuple[str, str, str]]) -> dict[str, int]:
    """Raw label -> its class's group number (the group of its first row; groups numbered
    by sorted name)."""
    group_of: dict[str, str] = {}
    for _, label, group in rows:
        first = group_of.setdefault(label, group)
        if first != group:
            raise DataError(f"{name}: class {label!r} is in groups {first!r} and {group!r}; a class needs one group")
    numbers = {g: i for i, g in enumerate(sorted(set(group_of.values())))}
    return {label: numbers[group] for label, group in group_of.items()}


# ---------------------------------------------------------------- question answering


def read_qa(location: str, *, source: str, title_column: str = "title") -> list[Article]:
    """Articles of a SQuAD v1.1 `.json` file, or of a `.jsonl` file with one question a
    line (`context`, `question`, `answers`, optional `id` and title column)."""
    path = _existing_file(location, source, "SQuAD .json or .jsonl QA file")
    if path.suffix.lower() == ".json":
        articles = load_squad(path)
    elif path.suffix.lower() == ".jsonl":
        articles = _qa_lines(location, path, source, title_column)
    else:
        raise DataError(
            f"{location}: QA files are .json (SQuAD v1.1) or .jsonl (one question a line); "
            f"convert it or set {_setting(source, 'path')} to such a file"
        )
    if not articles:
        raise DataError(f"{location} has no questions; fill it or point {_setting(source, 'path')} at another file")
    return articles


def _qa_lines(location: str, path: Path, source: str, title_column: str) -> list[Article]:
    """Rows grouped by title in first-appearance order (untitled: one article per context)."""
    articles: dict[str, list[QAItem]] = {}
    untitled: dict[str, str] = {}  # context -> its article's title
    seen: set[str] = set()
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    for row_number, (line_number, line) in enumerate(lines):
        where = f"{location} line {line_number}"
        try:
            row = json.loads(line)
        except ValueError as err:
            raise DataError(f"{where} is not JSON ({err}); each line must be one question's JSON object") from err
        if not isinstance(row, dict):
            raise DataError(f"{where} is not a JSON object; each line must be one question's JSON object")
        qid = row.get("id")
        item = _qa_item(row, where, f"{source}-{row_number}" if qid in (None, "") else str(qid))
        if item.id in seen:
            raise DataError(f"{where}: question id {item.id!r} is used twice; give each question its own id")
        seen.add(item.id)
        if title_column in row:
            title = str(row[title_column])
        else:
            title = untitled.setdefault(item.context, f"{source}/context-{len(untitled)}")
        articles.setdefault(title, []).append(item)
    return [Article(title, tuple(items)) for title, items in articles.items()]


def _qa_item(row: dict, where: str, qid: str) -> QAItem:
    """One question; its first answer must be in the context at its answer_start."""
    answers = row.get("answers")
    needs_start = answers is not None and not isinstance(answers, dict)  # a list of strings
    needed = ["context", "question", "answers"] + (["answer_start"] if needs_start else [])
    missing = [c for c in needed if c not in row]
    if missing:
        raise DataError(f"{where}: no column(s) {missing}; columns present: {sorted(row)}")
    if isinstance(answers, dict):  # SQuAD / Hugging Face style {"text": [...], "answer_start": [...]}
        texts, starts = answers.get("text") or [], answers.get("answer_start") or []
    else:
        texts = [answers] if isinstance(answers, str) else list(answers or [])
        starts = row["answer_start"] if isinstance(row["answer_start"], list) else [row["answer_start"]]
    if not texts or not starts:
        raise DataError(f"{where}: question {qid} has no answer (or no answer_start); every question needs one")
    context, first, start = str(row["context"]), str(texts[0]), starts[0]
    if not isinstance(start, int) or context[start : start + len(first)] != first:
        raise DataError(f"{where}: question {qid}: answer {first!r} is not in its context at {start}")
    return QAItem(qid, context, str(row["question"]), tuple(dict.fromkeys(str(t) for t in texts)), start)


# ---------------------------------------------------------------- image folders


@dataclass(frozen=True)
class ImageFolder:
    """Images by key (`GROUP/CLASS/FILE` or `CLASS/FILE`, sorted) with, per key, its class
    (`GROUP/CLASS` or `CLASS`) and group ("" without groups); pixels (105, 105) uint8."""

    keys: tuple[str, ...]
    classes: tuple[str, ...]
    groups: tuple[str, ...]
    pixels: dict[str, np.ndarray] = field(repr=False)
    skipped: tuple[str, ...] = ()  # keys of images Pillow could not read (bad_images=skip)


def read_image_folder(location: str, *, source: str, bad_images: str = "refuse") -> ImageFolder:
    """Every image of a folder or .zip laid out as CLASS/IMAGE or GROUP/CLASS/IMAGE,
    decoded now as grayscale (105, 105) uint8. An image Pillow cannot read is refused
    (`bad_images="refuse"`) or left out and listed in `skipped` (`"skip"`)."""
    if bad_images not in BAD_IMAGES:
        raise DataError(f"{_setting(source, 'bad_images')}={bad_images!r}; use one of {BAD_IMAGES}")
    if not location.lower().endswith(".zip"):
        folder = _local_folder(location, source)
        if not folder.is_dir():
            raise DataError(f"{location} not found; set {_setting(source, 'path')} to an existing image folder or .zip")
        return _decode_all(location, _folder_members(location, folder), source, bad_images)
    path = _local_file(location, source)
    if not path.is_file():
        raise DataError(f"{location} not found; set {_setting(source, 'path')} to an existing image folder or .zip")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(
            f"{location} is not a zip file ({err}); set {_setting(source, 'path')} to a folder or .zip"
        ) from err
    with archive:
        return _decode_all(location, _zip_members(location, archive), source, bad_images)


_Members = dict[tuple[str, ...], tuple[str, Callable[[], bytes]]]  # path parts -> (name in messages, bytes reader)


def _folder_members(location: str, folder: Path) -> _Members:
    members: _Members = {}
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if path.is_file() and _maybe_image(parts):
            members[parts] = (f"{location.rstrip('/')}/{'/'.join(parts)}", path.read_bytes)
    return members


def _zip_members(location: str, archive: zipfile.ZipFile) -> _Members:
    """Members by path, less one top folder that wraps them all (images_background/...)."""
    names = [n for n in archive.namelist() if not n.endswith("/") and _maybe_image(tuple(n.split("/")))]
    strip = len({n.split("/")[0] for n in names}) == 1 and all(n.count("/") >= 2 for n in names)
    return {tuple(n.split("/")[int(strip) :]): (f"{location}:{n}", lambda n=n: archive.read(n)) for n in names}


def _maybe_image(parts: tuple[str, ...]) -> bool:
    """False for hidden files, macOS resource forks and obvious non-images."""
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return not parts[-1].lower().endswith(NOT_IMAGES)


def _decode_all(location: str, members: _Members, source: str, bad_images: str) -> ImageFolder:
    depths = {len(parts) for parts in members}
    if depths - {2, 3} or len(depths) > 1:
        examples = sorted({len(p): "/".join(p) for p in members}.items())
        raise DataError(
            f"{location}: images must all be at CLASS/IMAGE or all at GROUP/CLASS/IMAGE; found depths "
            f"{', '.join(f'{d} ({e})' for d, e in examples)}; move them into one layout"
        )
    pixels, skipped = {}, []
    for parts, (shown, read) in sorted(members.items()):
        key = "/".join(parts)
        try:
            pixels[key] = _decode(read())
        except _BAD_IMAGE_ERRORS as err:
            if bad_images == "refuse":
                raise DataError(
                    f"{shown} is not an image Pillow can read ({type(err).__name__}: {err}); remove it, or set "
                    f"{_setting(source, 'bad_images')}=skip to leave such files out"
                ) from err
            skipped.append(key)
    return _image_folder(location, pixels, tuple(skipped))


def _image_folder(location: str, pixels: dict[str, np.ndarray], skipped: tuple[str, ...]) -> ImageFolder:
    if not pixels:
        raise DataError(f"{location} has no readable images ({len(skipped)} skipped); lay it out as CLASS/IMAGE")
    keys = tuple(sorted(pixels))
    classes = tuple(k.rsplit("/", 1)[0] for k in keys)
    if len(set(classes)) < 2:
        raise DataError(f"{location} has 1 class ({classes[0]!r}); a task needs at least 2 class folders")
    groups = tuple(c.split("/")[0] if "/" in c else "" for c in classes)
    return ImageFolder(keys=keys, classes=classes, groups=groups, pixels=pixels, skipped=skipped)


# A file Pillow cannot open or decode, a damaged zip member, or a decompression bomb (raised as ValueError).
_BAD_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zipfile.BadZipFile, zlib.error)


def _decode(data: bytes) -> np.ndarray:
    """(105, 105) uint8 grayscale; a decompression bomb raises like a broken file."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                gray = image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ValueError(f"decompression bomb guard: {err}") from err
    return np.asarray(gray, dtype=np.uint8)
