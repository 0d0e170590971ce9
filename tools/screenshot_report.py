"""Render a run's ``report.html`` in headless Chromium and save a screenshot.

    python tools/screenshot_report.py WORKDIR OUT.png [--width 1280] [--height 2400]

Runs ``chromium --headless --no-sandbox --disable-gpu --screenshot=OUT.png
--window-size=W,H file://<WORKDIR>/report.html`` (Debian: ``apt-get install -y chromium``; the
binary is looked up as ``chromium``, ``chromium-browser``, ``google-chrome``, or ``$CHROMIUM``).
The page is self-contained, so nothing is fetched. Exit status 2 with one ``error:`` line when
there is no report or no browser.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium binary: ``$CHROMIUM`` if set, else the first of :data:`CANDIDATES` on PATH."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def screenshot(html_path: str, out: str, width: int = 1280, height: int = 2400, timeout: float = 120.0) -> str:
    """Screenshot ``html_path`` into ``out`` (PNG); raises RuntimeError when it cannot."""
    browser = find_chromium()
    if browser is None:
        raise RuntimeError("no Chromium found (apt-get install -y chromium, or set $CHROMIUM)")
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            f"--screenshot={out}",
            f"--window-size={width},{height}",
            "file://" + os.path.abspath(html_path),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not os.path.isfile(out):
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"chromium failed (status {done.returncode}): {' | '.join(tail)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", help="a run's workdir (holding report.html) or the HTML file itself")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    page = args.workdir if args.workdir.endswith(".html") else os.path.join(args.workdir, "report.html")
    if not os.path.isfile(page):
        print(f"error: {page}: no such report (run the report stage first)", file=sys.stderr)
        return 2
    try:
        print(screenshot(page, args.out, args.width, args.height))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
