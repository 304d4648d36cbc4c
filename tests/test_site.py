"""The report site in real headless Chromium: every page draws its charts, offline, error-free."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from failfirst.report import render_site
from tests.test_report import EXPECTED_CHARTS, frame_pixels, series_run, vision_run

pytestmark = pytest.mark.filterwarnings("ignore:.*treating them as logits")

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
WINDOW = (1280, 2000)
CHART_TIMEOUT = 30.0  # seconds; 2 busy cores draw a page's charts in well under one


def chromium() -> str | None:
    return shutil.which("chromium") or next(
        (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (no extra packages).

    `--remote-debugging-pipe` makes Chromium read commands on fd 3 and write replies and
    events on fd 4, each a JSON message ending in a NUL byte.
    """

    def __init__(self, executable: str, profile: Path):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds():  # in the child, before exec: the pipe ends become fds 3 and 4
            # Copy both above 9 first, so neither overwrites the other, and so dup2 really
            # duplicates (dup2 onto the same number would keep the close-on-exec flag).
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
             "--remote-debugging-pipe", f"--user-data-dir={profile}",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=wire_fds,
            close_fds=False)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=WINDOW[0],
                  height=WINDOW[1], deviceScaleFactor=1, mobile=False)

    def _read(self, timeout: float) -> dict | None:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reply = self._read(deadline - time.monotonic())
            if reply is None:
                break
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(f"no reply to {method}")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + CHART_TIMEOUT
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            message = self._read(max(0.0, deadline - time.monotonic()))
            if message is None:
                raise TimeoutError(f"{url} did not load")
            self.events.append(message)

    def wait_for(self, expression: str, timeout: float = CHART_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {expression}")
            message = self._read(0.1)
            if message is not None:
                self.events.append(message)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions, failed loads and dialogs since the last open."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                found.append("uncaught: " + json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append("log: " + params["entry"].get("text", ""))
            elif method == "Network.loadingFailed":
                found.append("load failed: " + params.get("errorText", ""))
            elif method == "Page.javascriptDialogOpening":
                found.append("dialog: " + params.get("message", ""))
        return found

    def requested(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path | None = None) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", session=True,
                                          format="png")["data"])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return data

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = chromium()
    if executable is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI must run the browser test, but chromium is not installed")
        pytest.skip("chromium is not installed (CI installs it; apt-get install chromium)")
    instance = Browser(executable, tmp_path_factory.mktemp("chromium-profile"))
    yield instance
    instance.close()


# Per chart: drawn by vega-embed into an <svg> holding mark items (paths, text, ...).
CHART_STATE = """
Array.from(document.querySelectorAll('[data-spec]')).map(function (box) {
  var svg = box.querySelector('svg');
  return {id: box.id, rendered: box.classList.contains('rendered'),
          failed: box.classList.contains('failed'),
          marks: svg ? svg.querySelectorAll('g.role-mark > *').length : 0,
          canvas: !!box.querySelector('canvas')};
})
"""


LINE_OPACITY = """
Array.from(document.querySelector('[data-spec]').querySelectorAll('g.mark-line.role-mark path'))
  .map(function (p) { return parseFloat(p.getAttribute('opacity') || '1'); })
"""


def isolate_by_legend(browser: Browser, entry: int) -> list[float]:
    """Click legend entry `entry` of the page's first chart; the opacity of each line after."""
    assert set(browser.evaluate(LINE_OPACITY)) == {1.0}
    browser.evaluate(f"""(function () {{
      var symbol = document.querySelector('[data-spec]')
        .querySelectorAll('g.role-legend-symbol path')[{entry}];
      var box = symbol.getBoundingClientRect();
      var at = {{bubbles: true, clientX: box.x + box.width / 2, clientY: box.y + box.height / 2}};
      ['pointerdown', 'mousedown', 'pointerup', 'mouseup', 'click'].forEach(function (type) {{
        symbol.dispatchEvent(new MouseEvent(type, at));
      }});
    }})()""")
    browser.wait_for(f"({LINE_OPACITY}).filter(function (o) {{ return o < 1; }}).length > 0",
                     timeout=5)
    return browser.evaluate(LINE_OPACITY)


# The content box of each pixelated thumbnail in view, as laid out.
FRAMES_SHOWN = """
Array.from(document.querySelectorAll('img.frame.pixelated')).map(function (img) {
  var box = img.getBoundingClientRect();
  return {src: img.getAttribute('src'), style: img.getAttribute('style'),
          x: box.left + img.clientLeft, y: box.top + img.clientTop,
          w: img.clientWidth, h: img.clientHeight};
}).filter(function (f) { return f.w > 0 && f.y >= 0 && f.y + f.h <= window.innerHeight; })
"""


IMAGES_IN_VIEW_LOADED = """
Array.from(document.images).filter(function (i) {
  var box = i.getBoundingClientRect();
  return box.width > 0 && box.bottom > 0 && box.top < window.innerHeight;
}).every(function (i) { return i.complete; })
"""


def check_thumbnails_on_screen(browser: Browser, site: Path) -> int:
    """Each thumbnail in view shows its own frame of its sprite sheet: the screen's pixel at
    the centre of each frame pixel's square is that pixel. Returns how many were checked."""
    # Cards load their frames lazily: wait for the images in view (those far below may
    # never start loading, depending on how near the browser deems them).
    browser.wait_for(IMAGES_IN_VIEW_LOADED)
    shown = browser.evaluate(FRAMES_SHOWN)
    screen = np.asarray(Image.open(io.BytesIO(browser.screenshot())).convert("RGB"), np.int16)
    for box in shown:
        frame = frame_pixels(site, box).astype(np.int16)
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=2)
        rows, cols = frame.shape[:2]
        ys = np.floor(box["y"] + (np.arange(rows) + 0.5) * box["h"] / rows).astype(int)
        xs = np.floor(box["x"] + (np.arange(cols) + 0.5) * box["w"] / cols).astype(int)
        assert np.abs(screen[np.ix_(ys, xs)] - frame).max() <= 2, box
    return len(shown)


@pytest.mark.parametrize("kind", ["vision", "timeseries"])
def test_every_page_renders_its_charts_without_errors(kind, browser, tmp_path):
    path = tmp_path / "results.zarr"
    ds = vision_run(path) if kind == "vision" else series_run(path)
    site = render_site(path, tmp_path / "site").parent
    names = [str(p) for p in ds.perturbation.values]
    expected = {**EXPECTED_CHARTS, **{f"perturbation-{n}.html": 2 for n in names}}
    assert {p.name for p in site.glob("*.html")} == set(expected)
    for page, count in expected.items():
        url = (site / page).as_uri()
        browser.open(url)
        browser.wait_for(f"document.querySelectorAll('[data-spec].rendered, [data-spec].failed')"
                         f".length === {count} && document.readyState === 'complete'")
        state = browser.evaluate(CHART_STATE)
        assert len(state) == count, page
        for chart in state:
            assert chart["rendered"] and not chart["failed"], (page, chart)
            assert chart["marks"] > 0 or chart["canvas"], (page, chart)
        assert browser.errors() == [], page
        off_site = [u for u in browser.requested()
                    if not u.startswith(("file:", "data:", "about:"))]
        assert off_site == [], page
        if page == "curves.html":
            assert isolate_by_legend(browser, 1) == [1.0 if i == 1 else 0.12
                                                     for i in range(len(names))]
        if page == "failures.html":
            shown = browser.evaluate("document.querySelectorAll('.card:not([hidden])').length")
            assert shown == 20  # "All" shows the sweep's 20 most confident failures
            total = 0
            for name in names:  # a filter shows that perturbation's cards, all of them
                browser.evaluate(f"document.querySelector('[data-filter={json.dumps(name)}]').click()")
                visible = browser.evaluate(
                    "Array.from(document.querySelectorAll('.card:not([hidden])'))"
                    ".map(c => c.dataset.perturbation)")
                assert set(visible) <= {name}
                assert len(visible) == browser.evaluate(
                    f"document.querySelectorAll('.card[data-perturbation={json.dumps(name)}]').length")
                total += len(visible)
            assert total > 0
            broken = browser.evaluate(
                "Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0)"
                ".map(i => i.src)")
            assert broken == []
            browser.evaluate("document.querySelector('[data-filter=\"\"]').click()")
        if kind == "vision" and page in ("failures.html", f"perturbation-{names[0]}.html"):
            assert check_thumbnails_on_screen(browser, site) >= 9  # strip / three cards
        if page in ("index.html", "failures.html"):
            browser.screenshot(ARTIFACTS / f"site-{kind}-{page.replace('.html', '')}.png")
    assert (ARTIFACTS / f"site-{kind}-index.png").stat().st_size > 10_000
