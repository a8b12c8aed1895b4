"""README's screenshots of the search page, taken in Debian's headless Chromium.

    make demo    # in another shell: serves the sample catalog on 127.0.0.1:8000
    python docs/screenshots.py [--url http://127.0.0.1:8000] [--out docs]

Writes `demo-text.png` (a text query) and `demo-image.png` (an image query).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def _wait_for_results(page: Page) -> None:
    page.wait_for_selector("li.hit")
    # the first row's thumbnails (the rest load lazily, when scrolled to)
    page.wait_for_function("""() => [...document.querySelectorAll('li.hit img.thumb')]
        .slice(0, 4).every(img => img.complete && img.naturalWidth > 0)""")


def take(url: str, collection: str, text: str, image: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.goto(url.rstrip("/") + "/")
        page.wait_for_selector(f"#collection option[value='{collection}']", state="attached")
        page.select_option("#collection", collection)
        page.fill("#query", text)
        page.press("#query", "Enter")
        _wait_for_results(page)
        page.screenshot(path=str(out / "demo-text.png"))
        page.fill("#query", "")
        page.evaluate("document.getElementById('results').replaceChildren()")  # old hits
        page.set_input_files("#image-input", str(image))
        page.wait_for_selector("#image-preview:not([hidden])")
        _wait_for_results(page)
        page.screenshot(path=str(out / "demo-image.png"))
        browser.close()
    return [out / "demo-text.png", out / "demo-image.png"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--collection", default="emoji")
    parser.add_argument("--text", default="red apple")
    parser.add_argument("--image", type=Path, default=SAMPLE / "images" / "twitter" / "1f33b.png",
                        help="query image (default: Twemoji's sunflower)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    for path in take(args.url, args.collection, args.text, args.image, args.out):
        print(path)


if __name__ == "__main__":
    main()
