"""``report.html`` and ``mktn predict --html``: one self-contained page with players and timelines.

The structure is checked with Python's own HTML parser (every span present, queries escaped, no
outside resources). When ``chromium`` is installed, the page is opened in it headless and driven
over the DevTools protocol: no console errors or exceptions, every span drawn and on top at its
centre (nothing hides it), and a real mouse click on a span moves the player to the span's start.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import subprocess
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from test_video import make_video

from flows.report import write_report
from pipeline.datasets.records import QueryMoment

EVIL = 'a person opens the <script>alert("x")</script> door & "leaves"'
METRICS = {"R1@0.3": 60.0, "R1@0.5": 43.45, "R1@0.7": 20.0, "R5@0.3": 90.0, "R5@0.5": 70.0,
           "R5@0.7": 40.0, "mIoU": 41.9, "num_queries": 4}


class Elements(HTMLParser):
    """Every start tag as ``(tag, attrs)``, and the text inside ``<script>`` elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)

    def with_class(self, *names: str) -> list[dict[str, str]]:
        return [a for _, a in self.tags if set(names) <= set(a.get("class", "").split())]


def parse(page: Path) -> Elements:
    p = Elements()
    p.feed(page.read_text(encoding="utf-8"))
    return p


def _dataset(tmp_path: Path) -> tuple[list[QueryMoment], list[dict[str, Any]], dict[str, str]]:
    """Two test videos: ``vid_a`` on disk (2.0 s), ``vid_b`` only in the annotations (features)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "vid_a.mp4", n=30, fps=15, w=64, h=48)
    gt = [
        QueryMoment("q1", "vid_a", EVIL, 0.4, 1.2, 2.0, "test"),
        QueryMoment("q2", "vid_a", "the light turns red", 1.2, 2.0, 2.0, "test"),
        QueryMoment("q3", "vid_b", "someone waves", 3.0, 7.5, 12.0, "test"),
        QueryMoment("q4", "vid_b", "no prediction for this one", 1.0, 2.0, 12.0, "test"),
    ]
    preds = [
        {"query_id": "q1", "video_id": "vid_a", "spans": [[0.6, 1.4], [0.2, 1.0], [0.8, 1.9], [0.0, 2.0],
                                                          [1.0, 1.1], [0.1, 0.3]],
         "scores": [0.9, 0.5, 0.4, 0.2, 0.1, 0.05]},  # six: the page and plot show five
        {"query_id": "q2", "video_id": "vid_a", "spans": [[1.0, 1.8], [1.4, 2.0]], "scores": [0.7, 0.3]},
        {"query_id": "q3", "video_id": "vid_b", "spans": [[2.5, 8.0], [0.0, 4.0], [9.0, 12.0]],
         "scores": [0.8, 0.4, 0.1]},
    ]
    return gt, preds, {"vid_a": str(videos / "vid_a.mp4")}


def _report(tmp_path: Path) -> tuple[Path, list[QueryMoment], list[dict[str, Any]]]:
    gt, preds, videos = _dataset(tmp_path)
    paths = write_report(tmp_path / "report", title="MKTN <test> report", metrics=METRICS,
                         history=[{"epoch": 1, "loss/total": 2.0}, {"epoch": 2, "loss/total": 1.5}],
                         predictions=preds, ground_truth=gt, videos=videos,
                         details={"dataset": "tiny", "epochs": 2})
    assert paths.html == str(tmp_path / "report" / "report.html")
    return Path(paths.html), gt, preds


def test_report_html_structure_and_escaping(tmp_path: Path) -> None:
    page, gt, preds = _report(tmp_path)
    text = page.read_text(encoding="utf-8")
    doc = parse(page)
    # every prediction (top 5) and every ground truth is one span element
    assert len(doc.with_class("span", "pred")) == sum(min(5, len(p["spans"])) for p in preds) == 10
    assert len(doc.with_class("span", "truth")) == len(gt)
    assert [a["data-start"] for a in doc.with_class("span", "pred", "rank-1")] == ["0.600", "1.000", "2.500"]
    # the query with <script> is text, not markup: one script element (the page's own), escaped text
    assert sum(tag == "script" for tag, _ in doc.tags) == 1
    assert 'alert("x")' not in "".join(doc.scripts) and "<script>alert" not in text
    assert html.escape(EVIL) in text and "MKTN &lt;test&gt; report" in text
    # one player, for the video on disk, by a path relative to the page; the other says why not
    players = [a for tag, a in doc.tags if tag == "video"]
    assert [a["src"] for a in players] == ["../videos/vid_a.mp4"]
    assert (page.parent / players[0]["src"]).resolve() == (tmp_path / "videos" / "vid_a.mp4").resolve()
    assert "No player: video file not available (this report was made from stored features)." in text
    assert [a.get("data-player") for a in doc.with_class("timeline")] == ["player-0", None]
    # self-contained: plots inline as PNG data, nothing fetched from elsewhere
    images = [a["src"] for tag, a in doc.tags if tag == "img"]
    assert len(images) == 3  # recall, loss curves, timelines
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in text and "https://" not in text and "<link" not in text
    # the metrics table carries the same numbers as report.md
    assert "<td>MKTN</td><td>60.00</td><td>43.45</td>" in text
    md = (page.parent / "report.md").read_text(encoding="utf-8")
    assert "[report.html](report.html)" in md and "| MKTN | 60.00 | 43.45 |" in md
    assert (page.parent / "timelines.png").read_bytes()[:4] == b"\x89PNG"


def test_report_without_videos_says_so(tmp_path: Path) -> None:
    gt, preds, _ = _dataset(tmp_path)
    paths = write_report(tmp_path / "report", title="t", metrics=METRICS, predictions=preds, ground_truth=gt)
    doc = parse(Path(paths.html))
    assert not [a for tag, a in doc.tags if tag == "video"]
    assert Path(paths.html).read_text().count("No player: video file not available") == 2
    assert len(doc.with_class("span", "pred")) == 10
    # the cap on the page's videos is said, not silent
    capped = write_report(tmp_path / "capped", title="t", metrics=METRICS, predictions=preds,
                          ground_truth=gt, html_max_videos=1)
    text = Path(capped.html).read_text()
    assert "the first 1 of 2 test videos by id" in text and "someone waves" not in text


def test_predict_plot_and_page_for_a_new_video(tmp_path: Path) -> None:
    import numpy as np

    from model.predict import GroundingResult, plot_grounding, write_grounding_html

    video = make_video(tmp_path / "new clip #1.mp4", n=30, fps=15)
    result = GroundingResult(str(video), 2.0, [EVIL, "the light turns red"],
                             [[[0.6, 1.4], [0.2, 1.0], [0.8, 1.9]], [[1.0, 1.8]]],
                             [[0.9, 0.5, 0.4], [0.7]], np.zeros((4, 2)))
    plot_grounding(result, tmp_path / "out" / "pred.png")
    assert (tmp_path / "out" / "pred.png").read_bytes()[:4] == b"\x89PNG"
    write_grounding_html(result, tmp_path / "out" / "pred.html")
    page = tmp_path / "out" / "pred.html"
    doc = parse(page)
    assert len(doc.with_class("span", "pred")) == 4 and not doc.with_class("span", "truth")
    assert [a["src"] for tag, a in doc.tags if tag == "video"] == ["../new%20clip%20%231.mp4"]
    assert html.escape(EVIL) in page.read_text() and "<script>alert" not in page.read_text()


# --- the page in a real browser ----------------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=None, open_timeout=10)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _recv(self, deadline: float) -> dict[str, Any]:
        msg: dict[str, Any] = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        return msg

    def call(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = self._recv(deadline)
            if msg.get("id") == mid:
                assert "error" not in msg, f"{method}: {msg['error']}"
                result: dict[str, Any] = msg.get("result", {})
                return result
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 15.0) -> dict[str, Any]:
        for msg in self.events:
            if msg.get("method") == event:
                return msg
        deadline = time.monotonic() + timeout
        while True:
            msg = self._recv(deadline)
            self.events.append(msg)
            if msg.get("method") == event:
                return msg

    def js(self, expression: str, timeout: float = 15.0) -> Any:
        out = self.call("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                        returnByValue=True)
        assert "exceptionDetails" not in out, out["exceptionDetails"]
        return out["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        found = []
        for msg in self.events:
            method, params = msg.get("method"), msg.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:400])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args"))[:400])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"{params['entry'].get('source')}: {params['entry'].get('text')}")
        return found

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser(tmp_path: Path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed; .ci/run installs it with apt-get")
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--mute-audio", "--autoplay-policy=no-user-gesture-required", "--window-size=1200,900",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert proc.poll() is None, f"chromium exited with {proc.returncode} before it listened"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port in 20 s"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Runtime", "Log", "Page"):
            tools.call(f"{domain}.enable")
        yield tools
        try:  # a clean exit removes Chromium's singleton folder in /tmp; SIGTERM leaves it
            tools.ws.send(json.dumps({"id": 0, "method": "Browser.close", "params": {}}))
            proc.wait(timeout=10)
        except Exception:  # any failure: terminate below
            pass
        tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _open(tools: DevTools, page: Path) -> None:
    tools.events.clear()
    tools.call("Page.navigate", url=page.resolve().as_uri())
    tools.wait_for("Page.loadEventFired")


SPANS_ON_TOP = """(() => {
  const spans = Array.from(document.querySelectorAll('.span'));
  return spans.map(s => {
    s.scrollIntoView({block: 'center'});
    const r = s.getBoundingClientRect();
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    return {w: r.width, h: r.height, onTop: hit === s, cls: s.className};
  });
})()"""


def test_report_page_in_headless_chromium(tmp_path: Path, browser: DevTools) -> None:
    page, gt, preds = _report(tmp_path)
    _open(browser, page)
    # every span is drawn, with a size, and is the element on top at its centre
    spans = browser.js(SPANS_ON_TOP)
    assert len([s for s in spans if "pred" in s["cls"]]) == 10 and len(spans) == 10 + len(gt)
    assert all(s["w"] >= 3 and s["h"] >= 5 and s["onTop"] for s in spans), spans
    # a real mouse click on rank 2 of the first query of vid_a
    media = browser.js("""new Promise(done => {
      const v = document.getElementById('player-0');
      if (v.readyState >= 1) return done(v.readyState);
      const t = setTimeout(() => done(v.readyState), 5000);
      v.addEventListener('loadedmetadata', () => { clearTimeout(t); done(v.readyState); });
      v.addEventListener('error', () => { clearTimeout(t); done(-1); });
    })""")
    rect = browser.js("""(() => {
      const s = document.querySelector('#video-0 .span.pred.rank-2');
      s.scrollIntoView({block: 'center'});
      const v = document.getElementById('player-0');
      window.__seeked = new Promise(done => {
        v.addEventListener('seeked', () => done(v.currentTime), {once: true});
        setTimeout(() => done(null), 5000);
      });
      const r = s.getBoundingClientRect();
      return {x: r.left + r.width / 2, y: r.top + r.height / 2, start: parseFloat(s.dataset.start)};
    })()""")
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=rect["x"], y=rect["y"], button="left",
                     clickCount=1)
    seeked = browser.js("window.__seeked")
    state = browser.js("""(() => { const v = document.getElementById('player-0'); v.pause();
      return {t: v.currentTime, seek: v.getAttribute('data-seek'),
              status: document.querySelector('#video-0 .status').textContent,
              selected: document.querySelector('.span.selected').className}; })()""")
    assert rect["start"] == pytest.approx(0.2)
    assert state["selected"] == "span pred rank-2 selected" and state["status"].startswith("rank 2: 0.20")
    assert float(state["seek"]) == pytest.approx(0.2)  # what the click handler set
    if media >= 1:  # the mp4 loaded: the player itself moved to the span's start
        assert seeked == pytest.approx(0.2, abs=0.05), (seeked, state)
    else:  # this chromium cannot play H.264: the handler's value is what we can check
        pytest.xfail(f"chromium could not load the H.264 test video (readyState {media}); "
                     "the click handler set currentTime to the span's start")
    # a span of the video without a file shows its times, and nothing fails
    browser.js("document.querySelector('#video-1 .span.pred.rank-1').click()")
    assert browser.js("document.querySelector('#video-1 .status').textContent").startswith("rank 1: 2.50")
    time.sleep(0.3)  # let a late error reach the log
    browser.call("Runtime.evaluate", expression="1")  # drains pending events into browser.events
    assert browser.errors() == []


def test_predict_page_in_headless_chromium(tmp_path: Path, browser: DevTools) -> None:
    import numpy as np

    from model.predict import GroundingResult, write_grounding_html

    video = make_video(tmp_path / "clip.mp4", n=30, fps=15)
    result = GroundingResult(str(video), 2.0, ["one", "two"], [[[0.6, 1.4], [0.2, 1.0]], [[1.0, 1.8]]],
                             [[0.9, 0.5], [0.7]], np.zeros((4, 2)))
    write_grounding_html(result, tmp_path / "page.html")
    _open(browser, tmp_path / "page.html")
    spans = browser.js(SPANS_ON_TOP)
    assert len(spans) == 3 and all(s["onTop"] for s in spans)
    browser.js("document.querySelectorAll('.span.pred')[2].click()")
    assert float(browser.js("document.getElementById('player-0').getAttribute('data-seek')")) == 1.0
    browser.call("Runtime.evaluate", expression="1")
    assert browser.errors() == []
