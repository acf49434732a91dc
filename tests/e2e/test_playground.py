"""The playground page in a real headless Chromium (Debian's, driven by Playwright) against
a running `metaray serve` on 127.0.0.1: a person's loop of creating a task, trying it,
correcting a wrong answer and seeing the next version, for texts and for drawings. Each
step's screenshot is saved under outputs/playground/."""

import base64
import json
import shutil
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "outputs" / "playground"
TOKEN = "test-token"  # the server fixture's (conftest.py)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# no background connections: this machine's network is closed (Chromium's own flags)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
pytestmark = pytest.mark.integration
LOAD = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const parts = [nav, ...performance.getEntriesByType("resource")];
  return {bytes: parts.reduce((n, e) => n + e.transferSize, 0), requests: parts.length,
          interactive_ms: window.metarayReadyMs, dom_content_loaded_ms: nav.domContentLoadedEventEnd};
}"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Chromium is missing: scripts/test.sh installs Debian's chromium"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.posts = []  # every state-changing request the page sends
    page.on("request", lambda r: page.posts.append(r.url) if r.method in ("POST", "DELETE") else None)
    console = []  # the page's console and failed requests: saved beside the screenshots
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("response", lambda r: console.append(f"{r.status} {r.request.method} {r.url}"))
    page.goto(f"{server.url}/")
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    load = page.evaluate(LOAD)  # the first load: bytes over the wire, and until the page takes input
    (SHOTS / "load.json").write_text(json.dumps(load))
    assert load["bytes"] < 100_000, load
    yield page
    page.screenshot(path=str(SHOTS / "last.png"), full_page=True)
    (SHOTS / "console.txt").write_text("\n".join(console))
    context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def wait_for_version(page, version: int) -> None:
    page.wait_for_function(
        f"document.getElementById('task-version').textContent.includes('version {version}')"
        " && document.querySelector('#results .prediction')"
        f" && document.querySelector('#results .prediction').textContent.includes('(version {version})')",
        timeout=180_000,
    )


def wait_for_text(page, element_id: str, text: str) -> None:
    """Until the element shows `text`: the task list can show a new task before the page
    has fetched and drawn the task itself (a 30 s timeout fails the test)."""
    page.wait_for_function(
        "([id, text]) => document.getElementById(id).textContent === text", arg=[element_id, text], timeout=30_000
    )


def predictions(page) -> list[str]:
    return page.locator("#results .prediction .predicted").all_inner_texts()


def correct_the_closest_wrong_call(page, truths: list[str]) -> tuple[int, str]:
    """Click the true label's bar of the wrong prediction with the lowest score (the
    closest call); returns (its index, the true label)."""
    got = predictions(page)
    scores = [float(page.locator(f"#results .prediction:nth-child({i + 1}) .bar.best span").last.inner_text()[:-1])
              for i in range(len(got))]  # fmt: skip
    wrong = [i for i, (g, t) in enumerate(zip(got, truths, strict=True)) if g != t]
    assert wrong, f"every prediction was right ({got}): this test needs a wrong one"
    i = min(wrong, key=lambda j: scores[j])
    page.locator(f"#results .prediction:nth-child({i + 1}) .bar[data-label='{truths[i]}']").click()
    return i, truths[i]


def test_a_text_task_from_pasted_lines_is_tried_corrected_and_improves(page, server, corpus):
    by_class = corpus.indices_by_class()
    classes = [5, 6, 7, 8, 9]
    names = [corpus.label_names[c] for c in classes]
    support = [f"{corpus.label_names[c]}\t{corpus.inputs[i]}" for c in classes for i in by_class[c][:2]]
    held_out = [(corpus.inputs[i], corpus.label_names[c]) for c in classes for i in by_class[c][2:5]]

    # bad lines are shown with their line numbers, and nothing is sent
    page.fill("#examples", f"{support[0]}\nno tab on this line\n\t{corpus.inputs[0]}\n{support[1]}")
    page.click("#create-btn")
    errors = page.inner_text("#examples-error")
    assert "line 2: needs 2 TAB-separated fields" in errors and "line 3: empty label" in errors
    assert page.posts == []
    shot(page, "1-text-bad-lines")

    # without the token, a 401 (before the server reads the body); with it, the server's
    # own 422 shows next to the field it names
    page.fill("#examples", "\n".join(support))
    page.fill("#task-id", "bad id!")
    page.click("#create-btn")
    page.wait_for_function("document.getElementById('create-error').textContent.includes('401')")
    page.fill("#token", TOKEN)
    page.click("#create-btn")
    page.wait_for_function("document.getElementById('id-error').textContent.includes('422')")
    assert "id" in page.inner_text("#id-error") and not page.inner_text("#create-error")
    shot(page, "2-text-422-next-to-its-field")

    page.fill("#task-id", "pg-text")
    page.click("#create-btn")
    page.wait_for_selector("#tasks li[data-id='pg-text']", timeout=120_000)
    wait_for_text(page, "task-labels", f"labels: {', '.join(sorted(names))}")
    assert page.inner_text("#task-title") == "pg-text" and "version 1" in page.inner_text("#task-version")
    assert page.locator("#versions tbody tr").count() == 1

    page.fill("#inputs", "\n".join(text for text, _ in held_out))
    page.click("#classify-btn")
    page.wait_for_selector("#results .prediction")
    assert page.locator("#results .prediction").count() == len(held_out)
    assert page.locator("#results .prediction:nth-child(1) .bar").count() == len(names)  # every label's bar
    shot(page, "3-text-classified")
    i, truth = correct_the_closest_wrong_call(page, [label for _, label in held_out])
    wait_for_version(page, 2)
    assert predictions(page)[i] == truth
    assert page.locator("#versions tbody tr").count() == 2
    assert requests.get(f"{server.url}/v1/tasks/pg-text", timeout=10).json()["examples"] == len(support) + 1
    shot(page, "4-text-corrected-version-2")

    page.click("#delete-btn")
    page.wait_for_selector("#tasks li[data-id='pg-text']", state="detached")
    assert requests.get(f"{server.url}/v1/tasks/pg-text", timeout=10).status_code == 404


def test_an_image_task_from_dropped_drawings_is_tried_corrected_and_improves(page, server, drawing, tmp_path):
    def png(c: int, k: int) -> str:
        path = tmp_path / f"char{c}-{k}.png"
        path.write_bytes(base64.b64decode(drawing(c, k)))
        return str(path)

    page.fill("#token", TOKEN)
    page.select_option("#kind", "image")
    # a file of the wrong type is refused in the page, before any upload
    junk = tmp_path / "notes.txt"
    junk.write_text("not a drawing")
    zones = page.locator("#image-labels .drop")
    zones.nth(0).locator(".label-files").set_input_files(str(junk))
    assert "notes.txt: not an image this server reads" in page.inner_text("#image-error")
    # two drawings per label
    for z, c in enumerate((5, 6)):
        zones.nth(z).locator(".label-name").fill(f"char{c}")
        zones.nth(z).locator(".label-files").set_input_files([png(c, 0), png(c, 1)])
    assert page.locator("#image-labels img").count() == 4
    page.fill("#task-id", "pg-image")
    page.click("#create-btn")
    page.wait_for_selector("#tasks li[data-id='pg-image']", timeout=120_000)
    assert page.posts == [f"{server.url}/v1/tasks/upload"]
    wait_for_text(page, "task-labels", "labels: char5, char6")
    shot(page, "5-image-created")

    queries = [(c, k) for k in range(2, 8) for c in (5, 6)]
    page.set_input_files("#query-files", [png(c, k) for c, k in queries])
    page.click("#classify-images-btn")
    page.wait_for_selector("#results .prediction img")
    assert page.locator("#results .prediction").count() == len(queries)
    shot(page, "6-image-classified")
    i, truth = correct_the_closest_wrong_call(page, [f"char{c}" for c, _ in queries])
    wait_for_version(page, 2)
    assert predictions(page)[i] == truth
    shot(page, "7-image-corrected-version-2")
    started = time.time()
    page.click("#delete-btn")
    page.wait_for_selector("#task", state="hidden")
    assert time.time() - started < 30


def test_without_a_token_the_page_says_so_and_creates_tasks(browser, server, tmp_path):
    """The same page against the same store served without a token, by a second server on
    a port of its own beside the session's server (stopping and restarting that one would
    take a minute and a half; this one serves the text model only); the session's server
    still wants its token."""
    unlocked = server.elsewhere(tmp_path / "serve-no-token.log", text_only=True)
    try:
        unlocked.start(token="")
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{unlocked.url}/")
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        assert page.inner_text("#token-state") == "this server needs no token"
        page.fill("#examples", "yes\tyes please\nyes\tsure\nno\tno thanks\nno\tnever")
        page.fill("#task-id", "pg-open")
        page.click("#create-btn")
        page.wait_for_selector("#tasks li[data-id='pg-open']", timeout=120_000)
        shot(page, "8-no-token-created")
        page.click("#delete-btn")
        page.wait_for_selector("#tasks li[data-id='pg-open']", state="detached")
        context.close()
    finally:
        if unlocked.proc is not None:
            unlocked.stop()
    assert requests.post(f"{server.url}/v1/tasks", json={}, timeout=10).status_code == 401  # still its token
