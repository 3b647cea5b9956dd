#!/usr/bin/env python
"""Screenshots of the built documentation (docs/_build/html) in headless Chromium.

    python tools/docs_screenshots.py [--html docs/_build/html] [--out docs/screenshots]

Writes ``docs_index.png`` (the front page), ``docs_tutorial.png`` (tutorial 10 scrolled to its
first figure) and ``docs_api.png`` (the API page of ``xrdwidgets.course``), 1280 × 900 px, from
``file://`` URLs. Needs the playwright package and Debian's /usr/bin/chromium (no browser is
downloaded). Exits 1 when a page is missing or a tutorial figure did not load.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PAGES = {"docs_index.png": ("index.html", None),
         "docs_tutorial.png": ("tutorials/10_phantoms_and_scans.html", "img"),
         "docs_api.png": ("api/generated/xrdwidgets.course.html", None)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, default=ROOT / "docs" / "_build" / "html")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for name, (rel, scroll_to) in PAGES.items():
            path = args.html / rel
            if not path.exists():
                problems.append(f"{path}: missing (run `make docs` first)")
                continue
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            if scroll_to:
                images = page.locator("article " + scroll_to)
                if images.count() == 0:
                    problems.append(f"{path}: no figure found")
                else:
                    broken = page.evaluate("() => [...document.querySelectorAll('article img')]"
                                           ".filter(i => !(i.complete && i.naturalWidth > 0)).length")
                    if broken:
                        problems.append(f"{path}: {broken} figure(s) did not load")
                    images.nth(1 if images.count() > 1 else 0).scroll_into_view_if_needed()
                    page.mouse.wheel(0, 250)
                    page.wait_for_timeout(300)
            args.out.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out / name))
            sys.stdout.write(f"wrote {args.out / name}\n")
        browser.close()
    for msg in problems:
        sys.stderr.write(msg + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
