"""Screenshot the evaluate stage's HTML report of a real demo run, for the README (docs/images/report-evaluate.png).

    .venv/bin/alignpipe demo --workdir out/demo            # ~3–8 min on 2 CPU cores
    .venv/bin/python scripts/report_screenshot.py          # newest out/demo/kfp/*/evaluate/report -> the PNG

The report is the KFP `HTML` artifact (a file named `report` in the run's `evaluate/` folder); it is copied to a
temporary `.html` file, loaded in headless Chromium (`tests/browser.py`, Debian's `chromium`), checked the way
`tests/test_report_browser.py` checks it (no console errors, no request beyond the page itself, the charts drawn),
and its top part (the evaluation table, the charts and the deltas) is saved as a palette PNG (kept under 300 KB).
"""

from __future__ import annotations

import argparse
import base64
import io
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import browser  # noqa: E402  (tests/browser.py)

MAX_BYTES = 300_000


def find_report(workdir: Path) -> Path:
    """The newest `kfp/<run>/evaluate/report` under a demo workdir (or `workdir` itself if it is the report)."""
    if workdir.is_file():
        return workdir
    found = sorted(workdir.glob("kfp/*/evaluate/report"), key=lambda p: p.stat().st_mtime)
    if not found:
        sys.exit(f"no kfp/*/evaluate/report under {workdir} — run `alignpipe demo --workdir {workdir}` first")
    return found[-1]


def shoot(report: Path, out: Path, width: int, max_height: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "report-evaluate.html"
        shutil.copyfile(report, page_path)
        with browser.Chromium(width=width, height=900) as chromium:
            page = chromium.load(page_path.as_uri())
            errors = [m for m in page.console if m["level"] in ("error", "warning", "assert")]
            if errors or page.exceptions or page.requests != [page_path.as_uri()] or page.failed:
                sys.exit(f"the report did not load cleanly: {errors} {page.exceptions} {page.requests} {page.failed}")
            charts = chromium.evaluate("Array.from(document.querySelectorAll('svg')).map(s => [s.getAttribute("
                                       "'aria-label'), s.querySelectorAll('rect, circle, polyline').length])")
            if not charts or any(n == 0 for _, n in charts):
                sys.exit(f"a chart is empty: {charts}")
            # down to the end of the Deltas section (the metrics, lineage and config tables below are long)
            bottom = chromium.evaluate("(() => { const h = Array.from(document.querySelectorAll('h2'))"
                                       ".find(e => e.textContent === 'Metrics'); return h ? h.offsetTop - 8 : "
                                       "document.documentElement.scrollHeight; })()")
            height = int(min(max_height, bottom))
            shot = chromium.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                 clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
    png = base64.b64decode(shot["data"])
    try:
        from PIL import Image

        img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=64)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        png = buf.getvalue()
    except ImportError:  # Pillow is optional: the plain PNG is written
        pass
    if len(png) > MAX_BYTES:
        sys.exit(f"the screenshot is {len(png)} bytes (> {MAX_BYTES}); lower --max-height")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    return {"report": str(report), "out": str(out), "bytes": len(png), "height": height, "charts": charts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir", nargs="?", default="out/demo", help="demo workdir, or the report file itself")
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "report-evaluate.png"))
    p.add_argument("--width", type=int, default=1100)
    p.add_argument("--max-height", type=int, default=2400)
    args = p.parse_args(argv)
    if browser.find() is None:
        sys.exit("chromium is not installed (make browser-deps installs Debian's chromium)")
    print(shoot(find_report(Path(args.workdir)), Path(args.out), args.width, args.max_height))
    return 0


if __name__ == "__main__":
    sys.exit(main())
