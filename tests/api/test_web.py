"""The search page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Needs /usr/bin/chromium (apt-get install chromium); never `playwright install`."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from api.app import create_app
from api.config import ApiConfig
from search.collection.collection import NewItem
from search.settings import Settings
from tests.api.conftest import API_KEY, build_home
from tests.utils.corpus import png_bytes

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


# Tags are lists: a facet click on one filters on "contains".
TAGS = (["red", "fruit"], ["blue"], ["red"], ["green", "fruit"])
TAGGED_ITEMS = [NewItem(f"t{i}", text=f"tagged thing {i}", image=png_bytes(i),
                        attributes={"tags": TAGS[i % 4], "shelf": f"s{i % 2}"})
                for i in range(12)]


@pytest.fixture(scope="module")
def web_settings(tmp_path_factory, tiny_model) -> Settings:
    """The shop, and a collection with list attributes, in a home of this module's own."""
    settings = Settings(home=tmp_path_factory.mktemp("web-home"), model=tiny_model,
                        device="cpu", offline=True, api_key=API_KEY)
    build_home(settings)
    build_home(settings, "tagged", TAGGED_ITEMS)
    return settings


@pytest.fixture(scope="module")
def live_url(web_settings) -> Iterator[str]:
    """The app on a real uvicorn server in a thread, on a loopback port of its own."""
    config = uvicorn.Config(create_app(web_settings, ApiConfig(reload_interval_s=5)),
                            host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live_url):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(live_url + "/")
    page.wait_for_selector("#collection option[value='shop']", state="attached")
    page.select_option("#collection", "shop")  # other tests may have added collections
    yield page
    context.close()


def test_typed_query_renders_results(page):
    page.fill("#query", "fruit number 7")
    page.press("#query", "Enter")
    page.wait_for_selector("li.hit")
    assert page.locator("li.hit").count() == 24
    assert "results in" in page.inner_text("#status")
    first = page.locator("li.hit").first
    assert first.locator(".score").inner_text().startswith(("0.", "1.", "-0."))
    assert first.locator(".badge.modality").inner_text() in ("image", "text")
    assert page.is_hidden("#error")
    # thumbnails really load (the media route answers the browser)
    page.wait_for_function("""() => [...document.querySelectorAll('img.thumb')]
        .every(img => img.complete && img.naturalWidth > 0)""")


def test_filters_and_target_are_sent(page):
    page.click("#options summary")
    page.select_option("#target", "image")
    page.fill("#filters", "category=shoes price<=6")
    page.fill("#query", "product")
    page.click("#search-button")
    page.wait_for_selector("li.hit")
    texts = page.locator("li.hit .attributes").all_inner_texts()
    assert texts and all('category: "shoes"' in t for t in texts)
    assert set(page.locator("li.hit .badge.modality").all_inner_texts()) == {"image"}


def test_uploaded_and_dropped_images_render_results(page):
    page.set_input_files("#image-input", files=[
        {"name": "query.png", "mimeType": "image/png", "buffer": png_bytes(5)}])
    page.wait_for_selector("li.hit")
    assert page.is_visible("#image-preview")
    page.evaluate("document.getElementById('results').replaceChildren()")
    page.evaluate("""bytes => {
        const file = new File([new Uint8Array(bytes)], 'drop.png', {type: 'image/png'});
        const data = new DataTransfer();
        data.items.add(file);
        const zone = document.getElementById('dropzone');
        zone.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true,
                                                  cancelable: true}));
    }""", list(png_bytes(9)))
    page.wait_for_selector("li.hit")


def test_errors_are_shown_not_swallowed(page):
    page.set_input_files("#image-input", files=[
        {"name": "notes.png", "mimeType": "image/png", "buffer": b"this is not an image"}])
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.inner_text("#error") and "422" in page.inner_text("#error")
    assert page.locator("li.hit").count() == 0
    page.click("#options summary")
    page.fill("#filters", '{"price": {"between": 1}}')
    page.fill("#query", "x")
    page.press("#query", "Enter")
    page.locator("#error", has_text="unknown operator").wait_for()
    page.fill("#filters", "price>=cheap")
    page.press("#query", "Enter")
    page.locator("#error", has_text="needs a number").wait_for()


def test_generated_badge(page):
    canned = {"hits": [{"item_id": 1, "external_id": "gen-1", "score": 0.5, "modality": "image",
                        "text": "a drawn <b>cat</b>", "image_url": None, "thumbnail_url": None,
                        "attributes": {}, "generated": True, "scores": {"image": 0.5}}],
              "total_considered": 1,
              "took_ms": {"encode_ms": 1, "ann_ms": 1, "sql_ms": 1, "total_ms": 3}}
    page.route("**/v1/search", lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(canned)))
    page.fill("#query", "cat")
    page.press("#query", "Enter")
    page.wait_for_selector("li.hit .badge.generated")
    assert page.inner_text("li.hit .text") == "a drawn <b>cat</b>"  # text, never HTML


def test_generated_pictures_box_is_sent(page):
    page.click("#options summary")
    assert page.is_checked("#include-generated")
    page.uncheck("#include-generated")
    page.fill("#query", "product")
    with page.expect_request("**/v1/search") as typed:
        page.press("#query", "Enter")
    assert typed.value.post_data_json["include_generated"] is False
    # Chromium does not expose multipart bodies with files: read the FormData as sent.
    page.evaluate("""() => { const send = window.fetch; window.sentForms = [];
        window.fetch = (url, options) => {
            if (options && options.body instanceof FormData)
                window.sentForms.push(options.body.get('include_generated'));
            return send(url, options); }; }""")
    page.set_input_files("#image-input", files=[
        {"name": "query.png", "mimeType": "image/png", "buffer": png_bytes(5)}])
    page.wait_for_function("window.sentForms.length > 0")
    assert page.evaluate("window.sentForms") == ["false"]
    page.wait_for_selector("li.hit")
    assert page.is_hidden("#error")


def test_mode_switch_sends_the_mode_and_shows_rankers(page):
    page.check("input[name='mode'][value='keyword']")
    page.fill("#query", "fruit")
    page.press("#query", "Enter")
    page.wait_for_function("() => document.querySelector('#status').textContent"
                           ".includes('(keyword)')")
    badges = page.locator("li.hit").first.locator(".badge.ranker").all_inner_texts()
    assert badges == ["keyword #1"]
    page.check("input[name='mode'][value='vector']")
    page.press("#query", "Enter")
    page.wait_for_function("() => document.querySelector('#status').textContent"
                           ".includes('(vector)')")
    assert page.locator("li.hit").first.locator(".badge.ranker").inner_text() == "vector #1"


def test_facet_sidebar_sets_and_clears_a_filter(page):
    page.fill("#query", "product")
    page.press("#query", "Enter")
    # fields are learnt from the first answer, then the search runs again with facets
    page.wait_for_selector("#facets ul[data-field='category'] button.facet-value")
    assert "category" in page.inner_text("#facets")
    shoes = page.locator("#facets ul[data-field='category'] button[data-value='shoes']")
    shoes.click()
    page.wait_for_selector("#facets button.facet-value.active[data-value='shoes']")
    assert json.loads(page.input_value("#filters")) == {"category": "shoes"}
    attributes = page.locator("li.hit .attributes").all_inner_texts()
    assert attributes and all('category: "shoes"' in a for a in attributes)
    values = page.locator("#facets ul[data-field='category'] button").all()
    assert [v.get_attribute("data-value") for v in values] == ["shoes"]
    page.locator("#facets button.facet-value.active").click()
    page.wait_for_function("() => document.querySelectorAll("
                           "\"#facets ul[data-field='category'] button\").length > 1")
    assert page.input_value("#filters") == ""


def test_facet_click_on_a_list_value_filters_on_contains(page):
    page.select_option("#collection", "tagged")
    page.check("input[name='mode'][value='keyword']")
    page.fill("#query", "tagged thing")
    page.press("#query", "Enter")
    page.wait_for_selector("#facets ul[data-field='tags'] button[data-value='red']")
    counts = dict(zip(page.locator("#facets ul[data-field='tags'] .value").all_inner_texts(),
                      page.locator("#facets ul[data-field='tags'] .count").all_inner_texts(),
                      strict=True))
    assert counts == {"red": "6", "fruit": "6", "blue": "3", "green": "3"}  # over 12 items
    page.locator("#facets ul[data-field='tags'] button[data-value='red']").click()
    page.wait_for_selector("#facets ul[data-field='tags'] button.active[data-value='red']")
    assert json.loads(page.input_value("#filters")) == {"tags": "red"}
    page.wait_for_function("() => document.querySelectorAll('li.hit').length === 6")
    found = sorted(page.locator("li.hit .external-id").all_inner_texts())
    assert found == sorted(f"t{i}" for i in range(12) if "red" in TAGS[i % 4])
    # the other values now count only within the red items
    values = page.locator("#facets ul[data-field='tags'] .value").all_inner_texts()
    assert sorted(values) == ["fruit", "red"]
