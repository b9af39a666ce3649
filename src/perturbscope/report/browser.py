"""Check that an HTML report renders in headless Chromium and that every image loads.

``check_rendering(path)`` copies the page to a temporary folder, appends a small script that,
on the ``load`` event, writes each ``<img>``'s ``complete`` flag and ``naturalWidth`` /
``naturalHeight`` into an attribute of ``<body>``, runs ``chromium --headless --dump-dom`` on
the copy and reads the attribute back. An image that failed to decode has ``naturalWidth 0``.
The report itself carries no script.

Command line: ``python -m perturbscope.report.browser report.html [--screenshot shot.png]``
(exit code 1 if an image did not load). Needs the Debian packages ``chromium`` (and, for
WebDriver use, ``chromium-driver``; not needed here).
"""

from __future__ import annotations

import argparse
import html as _html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ImageState", "RenderCheck", "check_rendering", "find_chromium", "CHROMIUM_FLAGS"]

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")

_PROBE = """<script>window.addEventListener('load', function () {
  var s = Array.prototype.map.call(document.images, function (im) {
    return {id: im.id, complete: im.complete, w: im.naturalWidth, h: im.naturalHeight}; });
  document.body.setAttribute('data-perturbscope-images', JSON.stringify(s));
  document.body.setAttribute('data-perturbscope-tables', String(document.querySelectorAll('table').length));
});</script>"""


@dataclass(frozen=True)
class ImageState:
    id: str
    complete: bool
    width: int
    height: int

    @property
    def loaded(self) -> bool:
        return self.complete and self.width > 0 and self.height > 0


@dataclass(frozen=True)
class RenderCheck:
    """Outcome of :func:`check_rendering`: per-image states and the number of tables rendered."""

    images: tuple[ImageState, ...]
    tables: int

    @property
    def all_loaded(self) -> bool:
        return all(im.loaded for im in self.images)

    @property
    def failed(self) -> list[str]:
        return [im.id or f"#{k}" for k, im in enumerate(self.images) if not im.loaded]


def find_chromium() -> str | None:
    """Path of a Chromium binary (``$CHROMIUM``, /usr/bin/chromium, chromium on PATH), or None."""
    for cand in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return cand
    return None


def check_rendering(path: str | os.PathLike, *, chromium: str | None = None, timeout: float = 90.0,
                    screenshot: str | os.PathLike | None = None) -> RenderCheck:
    """Render ``path`` in headless Chromium; report every ``<img>``'s load state.

    Raises:
        FileNotFoundError: no such page, or no Chromium binary.
        RuntimeError: Chromium failed or produced no DOM.
    """
    page = Path(path)
    if not page.is_file():
        raise FileNotFoundError(f"no such HTML file: {page}")
    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    text = page.read_text(encoding="utf-8")
    probed = text.replace("</body>", _PROBE + "</body>", 1) if "</body>" in text else text + _PROBE
    with tempfile.TemporaryDirectory(prefix="perturbscope-chromium-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(probed, encoding="utf-8")
        base = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}",
                "--virtual-time-budget=10000"]
        res = subprocess.run([*base, "--dump-dom", copy.as_uri()], capture_output=True, text=True,
                             timeout=timeout, check=False)
        if res.returncode != 0 or "<body" not in res.stdout:
            raise RuntimeError(f"chromium failed (exit {res.returncode}): {res.stderr[-2000:]}")
        if screenshot is not None:
            subprocess.run([*base, "--window-size=1400,4000", f"--screenshot={Path(screenshot).resolve()}",
                            page.resolve().as_uri()], capture_output=True, timeout=timeout, check=False)
    m = re.search(r'data-perturbscope-images="([^"]*)"', res.stdout)
    if m is None:
        raise RuntimeError("the page's load event did not fire in chromium (no image states found)")
    states = json.loads(_html.unescape(m.group(1)))
    t = re.search(r'data-perturbscope-tables="(\d+)"', res.stdout)
    return RenderCheck(tuple(ImageState(s.get("id") or "", bool(s["complete"]), int(s["w"]), int(s["h"]))
                             for s in states), int(t.group(1)) if t else 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check an HTML report in headless Chromium.")
    p.add_argument("html")
    p.add_argument("--screenshot", default=None)
    args = p.parse_args(argv)
    chk = check_rendering(args.html, screenshot=args.screenshot)
    print(f"{len(chk.images)} images, {len(chk.images) - len(chk.failed)} loaded; {chk.tables} tables")
    for im in chk.images:
        print(f"  {im.id or '?'}: {'ok' if im.loaded else 'FAILED'} {im.width}x{im.height}")
    return 0 if chk.all_loaded else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
