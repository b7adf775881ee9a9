"""Headless Chromium, driven through the DevTools protocol (stdlib + websocket-client): load a page, collect
console messages, exceptions and every network request, evaluate JavaScript, take a screenshot.

    with Chromium() as browser:
        page = browser.load("file:///.../report.html")
        page.console, page.requests, browser.evaluate("document.title"), browser.screenshot(path)

Chromium is Debian's `chromium` (installed by `make browser-deps`, a prerequisite of `make test`); `find()`
returns None where it is absent and the tests skip saying so. No browser is downloaded.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps",
         "--hide-scrollbars", "--mute-audio", "--remote-debugging-address=127.0.0.1"]


def find() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Page:
    url: str
    console: list[dict[str, Any]] = field(default_factory=list)  # console API calls and log entries
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, itself included
    failed: list[str] = field(default_factory=list)


class Chromium:
    """One headless Chromium with a fresh profile (`--user-data-dir` in a temporary folder) on a free port."""

    def __init__(self, binary: str | None = None, width: int = 1100, height: int = 900):
        self.binary = binary or find()
        if not self.binary:
            raise RuntimeError("chromium not found (make browser-deps)")
        self.width, self.height = width, height
        self._next_id = 0

    def __enter__(self) -> "Chromium":
        import websocket

        self.profile = tempfile.mkdtemp(prefix="alignpipe-chromium-")
        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read() if self.proc.poll() is not None else "timed out"
                self.__exit__(None, None, None)
                raise RuntimeError(f"chromium did not start: {err[-2000:]}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            targets = json.load(resp)
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.events: list[dict[str, Any]] = []
        for method in ("Page.enable", "Runtime.enable", "Network.enable", "Log.enable"):
            self.call(method)
        return self

    def __exit__(self, *exc) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(getattr(self, "profile", ""), ignore_errors=True)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        my_id = self._next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def _wait_for(self, method: str, timeout: float = 30) -> None:
        if any(e["method"] == method for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if "method" in message:
                self.events.append(message)
                if message["method"] == method:
                    return
        raise TimeoutError(f"no {method} within {timeout} s")

    def load(self, url: str, settle_s: float = 0.5) -> Page:
        """Navigate to `url`, wait for the load event (and `settle_s` more for late requests), and return
        what the page logged and requested."""
        self.events = []
        self.call("Page.navigate", url=url)
        self._wait_for("Page.loadEventFired")
        end = time.monotonic() + settle_s
        self.ws.settimeout(0.1)
        try:
            while time.monotonic() < end:
                try:
                    message = json.loads(self.ws.recv())
                except Exception:  # noqa: BLE001 - websocket timeout: nothing more arrived
                    continue
                if "method" in message:
                    self.events.append(message)
        finally:
            self.ws.settimeout(30)
        page = Page(url)
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                page.console.append({"level": params.get("type"), "text": text})
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                page.console.append({"level": entry.get("level"), "text": entry.get("text"), "url": entry.get("url")})
            elif method == "Runtime.exceptionThrown":
                page.exceptions.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Network.requestWillBeSent":
                page.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                page.failed.append(f"{params.get('errorText')} {params.get('requestId')}")
        return page

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"javascript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: str | os.PathLike[str], full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": max(size[0], 1), "height": max(size[1], 1), "scale": 1}
            params["captureBeyondViewport"] = True
        data = base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        return out


if __name__ == "__main__":  # python tests/browser.py PAGE.html OUT.png  (how docs/images/*.png are made)
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python tests/browser.py PAGE.html OUT.png")
    with Chromium() as browser:
        loaded = browser.load(Path(sys.argv[1]).resolve().as_uri())
        print(f"{len(loaded.requests)} requests, {len(loaded.console)} console messages -> "
              f"{browser.screenshot(sys.argv[2])}")
