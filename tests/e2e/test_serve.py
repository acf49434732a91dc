"""`metaray serve` end to end over HTTP on 127.0.0.1: a real Serve app on an embedded Ray,
meta-trained checkpoints of all three task kinds, the task store on disk, a restart,
and bad input."""

import base64
import concurrent.futures
import dataclasses
import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from metaray.data.squad import load_squad
from metaray.serving.images import encode_image

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token"  # the server fixture's (conftest.py)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
pytestmark = pytest.mark.integration


def examples(corpus, classes, per_class, skip=0):
    by_class = corpus.indices_by_class()
    return [
        {"text": corpus.inputs[i], "label": corpus.label_names[c]}
        for c in classes
        for i in by_class[c][skip : skip + per_class]
    ]


def fed_back(server, task_id: str, body: dict) -> dict:
    """Feedback accepted (202), then the task's info once it has re-adapted to version 2
    (at most 120 s)."""
    accepted = server.post(f"/v1/tasks/{task_id}/feedback", body, headers=AUTH)
    assert accepted.status_code == 202, accepted.text
    deadline = time.time() + 120
    while (info := requests.get(f"{server.url}/v1/tasks/{task_id}", timeout=10).json())["version"] < 2:
        assert time.time() < deadline, f"feedback to {task_id!r} was not re-adapted"
        time.sleep(1)
    return info


def test_task_lifecycle_feedback_and_restart(server, corpus):
    classes = [0, 1, 2, 3, 4]
    support = examples(corpus, classes, 2)
    paths = requests.get(f"{server.url}/openapi.json", timeout=10).json()["paths"]
    assert {"/v1/tasks", "/v1/tasks/{task_id}/classify", "/v1/tasks/{task_id}/feedback"} <= set(paths)
    assert server.post("/v1/tasks", {"kind": "classify", "id": "bank", "examples": support}).status_code == 401
    created = server.post("/v1/tasks", {"kind": "classify", "id": "bank", "examples": support}, headers=AUTH)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1 and created.json()["metrics"]["steps"] == 3

    # a wrong prediction (the closest call among held-out texts), corrected by feedback
    held_out = examples(corpus, classes, 3, skip=2)
    got = server.post("/v1/tasks/bank/classify", {"texts": [e["text"] for e in held_out[:15]]}).json()["predictions"]
    wrong = [(p["score"], e) for p, e in zip(got, held_out, strict=False) if p["label"] != e["label"]]
    assert wrong, "every held-out text was right: this test needs a wrong one"
    _, fix = min(wrong, key=lambda w: w[0])
    fed_back(server, "bank", {"examples": [fix]})
    after = server.post("/v1/tasks/bank/classify", {"texts": [fix["text"]]}).json()
    assert after["version"] == 2 and after["predictions"][0]["label"] == fix["label"]

    server.stop()
    server.start()
    info = requests.get(f"{server.url}/v1/tasks/bank", timeout=10).json()
    assert info["version"] == 2 and info["examples"] == len(support) + 1
    again = server.post("/v1/tasks/bank/classify", {"texts": [fix["text"]]}).json()
    assert again["predictions"][0]["label"] == fix["label"]

    exported = subprocess.run(
        [sys.executable, "-m", "metaray.cli", "export", "serve/config.yaml", "bank", str(server.log.parent / "peft")]
        + server.args,
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (server.log.parent / "peft" / "adapter_model.safetensors").is_file()

    assert requests.delete(f"{server.url}/v1/tasks/bank", timeout=10).status_code == 401
    assert requests.delete(f"{server.url}/v1/tasks/bank", headers=AUTH, timeout=10).status_code == 204
    assert requests.get(f"{server.url}/v1/tasks/bank", timeout=10).status_code == 404


def test_a_served_task_scores_held_out_texts_as_eval_does(server, corpus):
    """The served classifier answers with the head that wins at meta-test (a linear head
    fitted on the task's examples): its accuracy on held-out BANKING77 texts equals
    `metaray eval`'s probe head (`PromptedClassifier.score`) on the same support and texts."""
    from metaray.data import Episode
    from metaray.serving.tasks import served_model

    classes = [0, 1, 3, 7, 9, 11, 20, 22]  # card intents: confusable, so the two heads differ
    support, held_out = examples(corpus, classes, 5), examples(corpus, classes, 6, skip=5)
    body = {"kind": "classify", "id": "heads", "examples": support, "steps": 0}
    created = server.post("/v1/tasks", body, headers=AUTH)
    assert created.status_code == 201, created.text
    served = []
    for start in range(0, len(held_out), 16):
        texts = [e["text"] for e in held_out[start : start + 16]]
        served += [p["label"] for p in server.post("/v1/tasks/heads/classify", {"texts": texts}).json()["predictions"]]
    served_accuracy = 100 * np.mean([label == e["label"] for label, e in zip(served, held_out, strict=True)])

    theta, _, classifier = served_model(str(server.checkpoints["classify"]), "classify")
    names = sorted({e["label"] for e in support})
    ids = lambda rows: np.array([names.index(e["label"]) for e in rows])  # noqa: E731
    episode = Episode(
        tuple(e["text"] for e in support), ids(support), tuple(e["text"] for e in held_out), ids(held_out), tuple(names)
    )
    scores, _ = classifier.score(theta, episode, ("proto", "probe"))
    assert served_accuracy == pytest.approx(scores["probe"])
    assert scores["probe"] != scores["proto"], "the heads agree here: this test cannot tell which one is served"
    assert requests.delete(f"{server.url}/v1/tasks/heads", headers=AUTH, timeout=10).status_code == 204


def test_unlabeled_texts_distil_a_task_at_creation_and_in_feedback(server, corpus):
    """A task created with unlabeled texts answers with the probe fitted to the teacher's
    soft labels of its examples and those texts (`metaray eval`'s distilled head, computed
    here apart), and unlabeled texts in feedback refresh it; refused where they cannot help."""
    from metaray.core.distill import DistillConfig, Lesson
    from metaray.core.heads import fit_linear_probe
    from metaray.models.teacher import Teacher, teacher_model_config
    from metaray.serving.tasks import examples_episode, served_model

    classes = [0, 1, 3, 7, 9]
    support, unlabeled = examples(corpus, classes, 2), [e["text"] for e in examples(corpus, classes, 3, skip=2)]
    body = {"kind": "classify", "id": "taught", "examples": support, "unlabeled": unlabeled[:10], "steps": 0}
    created = server.post("/v1/tasks", body, headers=AUTH)
    assert created.status_code == 201, created.text
    assert created.json()["metrics"]["distilled"] == {"teacher": "all-MiniLM-L6-v2", "unlabeled": 10}
    assert created.json()["unlabeled"] == 10

    theta, cfg, classifier = served_model(str(server.checkpoints["classify"]), "classify")
    episode = examples_episode([e["text"] for e in support], [e["label"] for e in support])
    teacher = Teacher(teacher_model_config(cfg.model, "all-MiniLM-L6-v2"))
    taught = teacher.label(dataclasses.replace(episode, unlabeled_inputs=tuple(unlabeled[:10])))
    student = classifier.encoder.encode(list(episode.support_inputs) + unlabeled[:10], theta)
    soft = Lesson(DistillConfig(teacher="all-MiniLM-L6-v2"), taught.logits).soft_targets(student)
    labels = torch.from_numpy(episode.support_labels)
    head = fit_linear_probe(student[: len(support)], labels, 5, classifier.scale, soft=soft)
    probe = fit_linear_probe(student[: len(support)], labels, 5, classifier.scale)
    held_out = [e["text"] for e in examples(corpus, classes, 2, skip=5)]
    served = server.post("/v1/tasks/taught/classify", {"texts": held_out}).json()["predictions"]
    query = classifier.encoder.encode(held_out, theta)
    expected, plain = head.logits(query).softmax(-1), probe.logits(query).softmax(-1)
    names = episode.label_names
    got = np.array([[p["scores"][n] for n in names] for p in served])
    # the replica encodes in other batches and threads than this process: L-BFGS turns float
    # noise into ~7e-4 of probability; the plain probe sits ~9e-2 away
    np.testing.assert_allclose(got, expected.numpy(), atol=5e-3)
    assert np.abs(got - plain.numpy()).max() > 2e-2, "the distilled head is the plain probe here"

    info = fed_back(server, "taught", {"unlabeled": unlabeled[10:]})
    assert info["unlabeled"] == 15 and info["examples"] == len(support)
    assert info["metrics"]["distilled"]["unlabeled"] == 15

    too_many = server.post("/v1/tasks/taught/feedback", {"unlabeled": ["a text"] * 16}, headers=AUTH)
    assert too_many.status_code == 413 and "unlabeled texts: 31 is over the limit of 30" in too_many.text
    nothing = server.post("/v1/tasks/taught/feedback", {"examples": [], "unlabeled": []}, headers=AUTH)
    assert nothing.status_code == 422 and "send examples, unlabeled inputs, or both" in nothing.text
    assert requests.delete(f"{server.url}/v1/tasks/taught", headers=AUTH, timeout=10).status_code == 204


def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving(server, corpus):
    good = examples(corpus, [10, 11], 2)
    assert server.post("/v1/tasks", {"kind": "classify", "id": "good", "examples": good}, headers=AUTH).ok

    def status(path, body=None, raw=None):
        if raw is not None:
            r = requests.post(f"{server.url}{path}", data=raw, headers={**AUTH, "content-type": "application/json"})
        else:
            r = server.post(path, body, headers=AUTH)
        return r.status_code, r.text

    code, text = status("/v1/tasks", raw='{"kind": "classify", "examples": [')
    assert code == 422 and "json" in text.lower()
    code, text = status("/v1/tasks", {"kind": "classify"})
    assert code == 422 and "examples" in text
    code, text = status("/v1/tasks", {"kind": "classify", "examples": [{"text": "hi", "label": "a"}] * 3})
    assert code == 422 and "at least two labels" in text
    code, text = status("/v1/tasks", {"kind": "classify", "examples": []})
    assert code == 422 and "examples" in text
    code, text = status("/v1/tasks/good/feedback", {"examples": [{"text": "hi", "label": "no_such_label"}]})
    assert code == 422 and "no_such_label" in text and "label" in text
    assert status("/v1/tasks/nope/classify", {"texts": ["hi"]})[0] == 404
    assert status("/v1/tasks/../etc/classify", {"texts": ["hi"]})[0] == 404
    code, text = status("/v1/tasks", {"kind": "classify", "examples": examples(corpus, [10, 11], 21)})
    assert code == 413 and "examples" in text
    code, text = status("/v1/tasks/good/classify", {"texts": ["x" * 301]})
    assert code == 413 and "texts[0]" in text
    assert status("/v1/tasks/good/classify", {"texts": ["hi"] * 17})[0] == 413

    # concurrent creates of one id: one winner, and its files are whole
    body = {"kind": "classify", "id": "race", "examples": good}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda _: server.post("/v1/tasks", body, headers=AUTH).status_code, range(4)))
    assert codes == [201, 409, 409, 409]
    assert server.post("/v1/tasks/race/classify", {"texts": ["hi"]}).status_code == 200

    # a corrupt task file is reported and skipped; the replica keeps serving the others
    store = Path(server.args[1].split("=", 1)[1])
    (store / "good" / "v000001" / "task.safetensors").write_bytes(b"not a safetensors file")
    listed = requests.get(f"{server.url}/v1/tasks", timeout=10).json()
    assert "good" in listed["corrupt"] and "race" in [t["id"] for t in listed["tasks"]]
    code, text = status("/v1/tasks/good/classify", {"texts": ["hi"]})
    assert code == 500 and "task.safetensors" in text
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert server.post("/v1/tasks/race/classify", {"texts": ["hi"]}).status_code == 200
    assert server.post("/v1/tasks", {"kind": "classify", "id": "badjson", "examples": good}, headers=AUTH).ok
    (store / "badjson" / "v000001" / "task.json").write_text("{not json")
    broken = requests.get(f"{server.url}/v1/tasks/badjson", timeout=10)
    assert broken.status_code == 500 and "task.json" in broken.text
    assert "badjson" in requests.get(f"{server.url}/v1/tasks", timeout=10).json()["corrupt"]

    # an id whose create died before its first version can still be deleted (and so reused)
    (store / "stuck").mkdir()
    assert requests.delete(f"{server.url}/v1/tasks/stuck", headers=AUTH, timeout=10).status_code == 204
    assert server.post("/v1/tasks", {"kind": "classify", "id": "stuck", "examples": good}, headers=AUTH).ok


def test_bounded_load_has_no_failures_and_loses_no_feedback(server, corpus):
    """200 requests at concurrency 8, every 10th a feedback: all succeed, and every
    accepted feedback example ends up in the task."""
    support = examples(corpus, [20, 21, 22], 2)
    assert server.post("/v1/tasks", {"kind": "classify", "id": "load", "examples": support}, headers=AUTH).ok
    labels = sorted({e["label"] for e in support})
    texts = [corpus.inputs[i] for i in range(200)]

    def call(i):
        if i % 10 == 0:
            body = {"examples": [{"text": texts[i], "label": labels[i % 3]}]}
            return server.post("/v1/tasks/load/feedback", body, headers=AUTH).status_code
        return server.post("/v1/tasks/load/classify", {"texts": [texts[i]]}).status_code

    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(call, range(200)))
    assert time.time() - start < 300
    assert codes.count(202) == 20 and codes.count(200) == 180
    deadline = time.time() + 300
    while (info := requests.get(f"{server.url}/v1/tasks/load", timeout=10).json())["pending_feedback"]:
        assert time.time() < deadline, "feedback still pending"
        time.sleep(1)
    assert info["examples"] == len(support) + 20


def relabelled(support, names):
    """The same texts under other label names (a new task with the old texts)."""
    old = sorted({e["label"] for e in support})
    return [{"text": e["text"], "label": names[old.index(e["label"])]} for e in support]


def test_a_task_deleted_and_created_again_never_answers_as_the_old_one(server, corpus):
    """Create t1 (a, b), classify (caches it), delete, create t1 (x, y): the answers use
    x and y. Create t2, send feedback, delete while it re-adapts, create t2 again: the old
    re-adaptation never writes into the new t2."""
    support = examples(corpus, [30, 31], 2)
    first = relabelled(support, ["a", "b"])
    assert server.post("/v1/tasks", {"kind": "classify", "id": "t1", "examples": first}, headers=AUTH).ok
    got = server.post("/v1/tasks/t1/classify", {"texts": [support[0]["text"]]}).json()
    assert {p["label"] for p in got["predictions"]} <= {"a", "b"}
    assert requests.delete(f"{server.url}/v1/tasks/t1", headers=AUTH, timeout=10).status_code == 204
    again = {"kind": "classify", "id": "t1", "examples": relabelled(support, ["x", "y"])}
    assert server.post("/v1/tasks", again, headers=AUTH).status_code == 201
    got = server.post("/v1/tasks/t1/classify", {"texts": [e["text"] for e in support]})
    assert got.status_code == 200 and {p["label"] for p in got.json()["predictions"]} <= {"x", "y"}
    assert {label for p in got.json()["predictions"] for label in p["scores"]} == {"x", "y"}

    assert server.post("/v1/tasks", {"kind": "classify", "id": "t2", "examples": first}, headers=AUTH).ok
    fix = {"examples": [{"text": support[1]["text"], "label": "a"}]}
    assert server.post("/v1/tasks/t2/feedback", fix, headers=AUTH).status_code == 202
    assert requests.delete(f"{server.url}/v1/tasks/t2", headers=AUTH, timeout=10).status_code == 204
    again = {"kind": "classify", "id": "t2", "examples": relabelled(support, ["x", "y"])}
    assert server.post("/v1/tasks", again, headers=AUTH).status_code == 201
    time.sleep(12)  # the old task's re-adaptation (about 2 s) has long finished
    info = requests.get(f"{server.url}/v1/tasks/t2", timeout=10).json()
    assert info["version"] == 1 and info["labels"] == ["x", "y"] and info["pending_feedback"] == 0


def test_question_answering_tasks_answer_refuse_long_contexts_and_take_feedback(server, data_dir):
    article = load_squad(f"{data_dir}/xquad/xquad.en.json")[0]
    support = [{"context": q.context, "question": q.question, "answer": q.answers[0]} for q in article.items[:3]]
    created = server.post("/v1/tasks", {"kind": "qa", "id": "sb50", "examples": support}, headers=AUTH)
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "qa" and created.json()["metrics"]["steps"] == 2
    short = {"context": "The Broncos beat the Panthers in Super Bowl 50.", "question": "Who beat the Panthers?"}
    answered = server.post("/v1/tasks/sb50/answer", short)
    assert answered.status_code == 200, answered.text
    assert answered.json()["version"] == 1 and isinstance(answered.json()["answer"], str)

    long = server.post("/v1/tasks/sb50/answer", {"context": article.items[0].context, "question": "Who won?"})
    assert long.status_code == 413 and "max_context_tokens" in long.text and "long_context=head" in long.text
    bad = {"kind": "qa", "examples": [{"context": "a b c", "question": "which?", "answer": "d"}]}
    code = server.post("/v1/tasks", bad, headers=AUTH)
    assert code.status_code == 422 and "span of its context" in code.text
    assert server.post("/v1/tasks/sb50/classify", {"texts": ["hi"]}).status_code == 409
    wrong = server.post("/v1/tasks/sb50/feedback", {"examples": [{"text": "hi", "label": "x"}]}, headers=AUTH)
    assert wrong.status_code == 422 and "answer" in wrong.text

    fix = {**short, "answer": "The Broncos"}
    info = fed_back(server, "sb50", {"examples": [fix]})
    assert info["examples"] == 4 and server.post("/v1/tasks/sb50/answer", short).json()["version"] == 2


def rgba_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGBA", (20, 20)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_image_tasks_classify_drawings_and_refuse_bad_images(server, drawing):
    support = [{"image": drawing(c, k), "label": f"char{c}"} for c in (0, 1, 2) for k in (0, 1)]
    created = server.post("/v1/tasks", {"kind": "image", "id": "glyphs", "examples": support}, headers=AUTH)
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "image" and created.json()["labels"] == ["char0", "char1", "char2"]
    queries = [drawing(c, k) for c in (0, 1, 2) for k in (5, 6)]
    got = server.post("/v1/tasks/glyphs/classify", {"images": queries})
    assert got.status_code == 200, got.text
    predicted = [p["label"] for p in got.json()["predictions"]]
    assert len(predicted) == 6 and sum(p == f"char{i // 2}" for i, p in enumerate(predicted)) >= 3  # chance: 2

    noise = encode_image(np.random.default_rng(0).integers(0, 256, (400, 400), dtype=np.uint8))
    for images, code, message in [
        (["aGVsbG8="], 422, "not a decodable image"),
        (["%%%"], 422, "not base64"),
        ([rgba_png()], 422, "4 channel(s) in mode RGBA"),
        ([noise], 413, "over the limit of 100000"),
    ]:
        bad = server.post("/v1/tasks/glyphs/classify", {"images": [queries[0], *images]})
        assert bad.status_code == code and "images[1]" in bad.text and message in bad.text, bad.text
    wrong = server.post("/v1/tasks/glyphs/classify", {"texts": ["hi"]})
    assert wrong.status_code == 422 and "send images" in wrong.text
    one_label = {"kind": "image", "examples": support[:2]}
    assert "at least two labels" in server.post("/v1/tasks", one_label, headers=AUTH).text
    assert server.post("/v1/tasks/glyphs/classify", {"images": queries[:1]}).status_code == 200  # still serving


def test_unlabeled_drawings_distil_an_image_task(server, drawing):
    """An image task created with unlabeled drawings answers with the head the image
    teacher (image_distill) taught, as the same settings' `TaskClassifier` computes it in
    this process, not the plain probe; unlabeled drawings in feedback refresh it."""
    from metaray.serving.app import settings_from
    from metaray.serving.run import load_serve_config
    from metaray.serving.tasks import ClassifyRequest, TaskClassifier

    support = [{"image": drawing(c, k), "label": f"char{c}"} for c in (0, 1, 2) for k in (0, 1)]
    unlabeled, queries = [drawing(c, k) for c in (0, 1, 2) for k in (2, 3, 4)], [drawing(c, 5) for c in (0, 1, 2)]
    body = {"kind": "image", "examples": support, "unlabeled": unlabeled[:6], "steps": 0}
    created = server.post("/v1/tasks", {**body, "id": "taught-glyphs"}, headers=AUTH)
    assert created.status_code == 201, created.text
    assert created.json()["metrics"]["distilled"] == {"teacher": "efficientnet-lite0", "unlabeled": 6}
    plain = server.post("/v1/tasks", {**body, "id": "plain-glyphs", "unlabeled": []}, headers=AUTH)
    assert plain.status_code == 201 and "distilled" not in plain.json()["metrics"], plain.text

    settings = settings_from(load_serve_config(server.config, server.args)["args"])
    local = TaskClassifier(str(server.checkpoints["image"]), settings.image_adapt, 1, "image", "probe",
                           settings.image_distill)  # fmt: skip
    labels = [e["label"] for e in support]
    tensors, _ = local.adapt([e["image"] for e in support], labels, 0, unlabeled[:6])
    expected = local.classify([ClassifyRequest("k", tensors, tuple(sorted(set(labels))), tuple(queries))])[0]

    def scores(task_id: str) -> np.ndarray:
        got = server.post(f"/v1/tasks/{task_id}/classify", {"images": queries})
        assert got.status_code == 200, got.text
        return np.array([[p["scores"][n] for n in sorted(set(labels))] for p in got.json()["predictions"]])

    want = np.array([[row["scores"][n] for n in sorted(set(labels))] for row in expected])
    np.testing.assert_allclose(scores("taught-glyphs"), want, atol=5e-3)  # float noise of other threads
    assert np.abs(scores("taught-glyphs") - scores("plain-glyphs")).max() > 2e-2, "the distilled head is the plain one"

    info = fed_back(server, "taught-glyphs", {"unlabeled": unlabeled[6:]})
    assert info["unlabeled"] == 9 and info["metrics"]["distilled"]["unlabeled"] == 9
    for task_id in ("taught-glyphs", "plain-glyphs"):
        assert requests.delete(f"{server.url}/v1/tasks/{task_id}", headers=AUTH, timeout=10).status_code == 204


def test_image_tasks_take_multipart_uploads(server, drawing):
    """`curl -F LABEL=@file`: the same task and predictions as the JSON routes give."""
    png = {(c, k): base64.b64decode(drawing(c, k)) for c in (3, 4) for k in (0, 1, 7)}
    files = [(f"char{c}", (f"{c}-{k}.png", png[c, k])) for c in (3, 4) for k in (0, 1)]
    url = f"{server.url}/v1/tasks"
    fields = {"id": "uploaded", "steps": "2"}
    created = requests.post(f"{url}/upload", files=files, data=fields, headers=AUTH, timeout=120)
    assert created.status_code == 201, created.text
    assert created.json()["labels"] == ["char3", "char4"] and created.json()["examples"] == 4
    queries = [("image", (f"{c}-7.png", png[c, 7])) for c in (3, 4)]
    got = requests.post(f"{url}/uploaded/classify/upload", files=queries, timeout=120)
    as_json = server.post("/v1/tasks/uploaded/classify", {"images": [drawing(c, 7) for c in (3, 4)]})
    assert got.status_code == 200 and got.json()["predictions"] == as_json.json()["predictions"], got.text

    assert requests.post(f"{url}/upload", files=files, timeout=120).status_code == 401  # creating needs the token
    huge = [("char3", ("huge.png", b"x" * 100_001)), *files]
    refused = requests.post(f"{url}/upload", files=huge, headers=AUTH, timeout=120)
    assert refused.status_code == 413 and "'huge.png'" in refused.text
    junk = requests.post(f"{url}/uploaded/classify/upload", files=[("image", ("a.png", b"hello"))], timeout=120)
    assert junk.status_code == 422 and "images[0]: not a decodable image" in junk.text
    assert requests.post(f"{url}/uploaded/classify/upload", data={"x": "1"}, timeout=120).status_code == 422


def raw_request(server, head: str, body: bytes = b"", wait_s: float = 5.0) -> tuple[int, float, str]:
    """(status, seconds to the answer, its text) for a request written to the socket by
    hand: the headers (and `body`, possibly much less than its Content-Length says)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait_s) as sock:
        start = time.perf_counter()
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = sock.recv(65536)
        seconds = time.perf_counter() - start
        head_end = answer.find(b"\r\n\r\n")
        while head_end < 0 or len(answer) < head_end + 4 + body_length(answer[:head_end]):
            more = sock.recv(65536)  # the rest of the answer (its headers and body may come apart)
            if not more:
                break
            answer += more
            head_end = answer.find(b"\r\n\r\n")
        text = answer.decode(errors="replace")
        return int(text.split()[1]), seconds, text


def body_length(head: bytes) -> int:
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return int(lengths[0]) if lengths else 0


def test_limits_and_authorisation_come_before_any_work(server, corpus):
    """A 50 MB create without a token is a 401, and a 50 MB classify a 413, before a byte of
    the body is read; a body streaming past max_body_bytes is cut off with a 413."""
    big = 50 * 2**20
    for path, token, code in (("/v1/tasks", "", 401), ("/v1/tasks/x/classify", "", 413),
                              ("/v1/tasks", f"Authorization: Bearer {TOKEN}\n", 413)):  # fmt: skip
        head = f"POST {path} HTTP/1.1\nHost: x\nContent-Type: application/json\n{token}Content-Length: {big}\n"
        status, seconds, text = raw_request(server, head)
        assert status == code and seconds < 1.0, (path, status, seconds, text[-300:])
    head = "POST /v1/tasks/x/classify HTTP/1.1\nHost: x\nContent-Type: application/json\nTransfer-Encoding: chunked\n"
    chunk = b"%x\r\n%s\r\n" % (2**20, b" " * 2**20)
    status, _, text = raw_request(server, head, chunk * 3, wait_s=30)  # 3 MiB: just over
    assert status == 413 and "over the limit of 3000000" in text

    support = examples(corpus, list(range(9)), 1)
    many = server.post("/v1/tasks", {"kind": "classify", "examples": support}, headers=AUTH)
    assert many.status_code == 413 and "labels: 9 is over the limit of 8" in many.text
    long_label = [{**e, "label": "x" * 41 if i == 0 else e["label"]} for i, e in enumerate(support[:3])]
    refused = server.post("/v1/tasks", {"kind": "classify", "examples": long_label}, headers=AUTH)
    assert refused.status_code == 413 and "examples[0].label characters" in refused.text
    assert server.post("/v1/tasks", {"kind": "classify", "id": "topk", "examples": support[:4]}, headers=AUTH).ok
    got = server.post("/v1/tasks/topk/classify", {"texts": [support[0]["text"]], "top_k": 2}).json()
    assert (
        len(got["predictions"][0]["scores"]) == 2 and got["predictions"][0]["label"] in got["predictions"][0]["scores"]
    )
    upload = requests.post(f"{server.url}/v1/tasks/nosuch/classify/upload", files=[("image", ("a.png", b"x"))])
    assert upload.status_code == 404
    assert requests.get(f"{server.url}/v1/tasks/topk%0A", timeout=10).status_code == 404


def png_claiming(width: int, height: int) -> str:
    """base64 of a 1 x 1 PNG whose header claims width x height (a decompression bomb)."""
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    raw = bytearray(buffer.getvalue())
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    return base64.b64encode(bytes(raw)).decode()


def test_images_outside_the_allowed_formats_or_sizes_are_refused_by_name(server, drawing):
    support = [{"image": drawing(c, k), "label": f"c{c}"} for c in (5, 6) for k in (0, 1)]
    assert server.post("/v1/tasks", {"kind": "image", "id": "formats", "examples": support}, headers=AUTH).ok
    eps = base64.b64encode(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n").decode()
    for image, code, message in ((png_claiming(50_000, 50_000), 413, "too many pixels"),
                                 (eps, 422, "not a decodable image")):  # fmt: skip
        bad = server.post("/v1/tasks/formats/classify", {"images": [drawing(5, 2), image]})
        assert bad.status_code == code and "images[1]" in bad.text and message in bad.text, bad.text


def test_every_route_fuzzed_from_the_openapi_schema_gives_no_server_error(server):
    """Schemathesis generates requests for every operation of the app's own schema (a
    bounded number each, deterministic): no 5xx, and every documented response matches
    its schema."""
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
           "--checks", "not_a_server_error,response_schema_conformance", "--max-examples", "6",
           "--generation-deterministic", "--request-timeout", "120",
           "--header", f"Authorization: Bearer {TOKEN}"]  # fmt: skip
    fuzzed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert fuzzed.returncode == 0, fuzzed.stdout[-6000:] + fuzzed.stderr[-2000:]
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
