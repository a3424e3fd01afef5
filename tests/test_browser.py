"""Browser tests of the built site (``make browser``; pytest marker ``browser``).

They drive Debian's Chromium through Playwright against ``_build/html`` (or ``BOOK_HTML``)
served by a local ``http.server`` on a free port, and check what a reader would see:

* every page loads with no console error, no page error, no failed request and no request
  to any other host (the site is self-contained);
* every page with math shows MathJax output (``mjx-container``) and no MathJax error;
* every chapter that uses ipywidgets embeds the widget state and shows the widgets;
* every table-of-contents link resolves (HTTP 200) and every chapter in notebooks/ is in it;
* the search page finds "Jacobian";
* at a 390 px wide viewport no page scrolls sideways.

Screenshots of every page (desktop and 390 px) go to ``artifacts/screenshots/``.
Run ``make book-build`` first (``make browser`` does) and ``scripts/setup_browser.py``.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html"))
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("BOOK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SKIP_DIRS = {"_static", "_sources", "_images", "reports"}
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def site_pages() -> list[str]:
    """Every HTML page of the site, relative to its root (posix paths)."""
    if not SITE.is_dir():
        return []
    pages = []
    for path in sorted(SITE.rglob("*.html")):
        rel = path.relative_to(SITE)
        if rel.parts[0] in SKIP_DIRS:
            continue
        pages.append(rel.as_posix())
    return pages


PAGES = site_pages()
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))


def uses_widgets(notebook: Path) -> bool:
    """True if a code cell of the chapter displays an ipywidget (a widget-view output).

    Chapters build their explorers in backprop_lab.explore, so the cell source need not
    mention ipywidgets; the stored outputs show whether a widget was displayed.
    """
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    return any(
        "application/vnd.jupyter.widget-view+json" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        pass


@pytest.fixture(scope="session")
def base_url() -> Iterator[str]:
    assert (SITE / "index.html").is_file(), (
        f"{SITE}/index.html is missing: build the site first with `make book-build`"
    )
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: run `python scripts/setup_browser.py` (installs Debian's chromium)"
    )
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class PageVisit:
    """A page opened in a fresh context, with everything that went wrong recorded."""

    def __init__(self, browser, base_url: str, viewport: dict[str, int]):
        self.base_url = base_url
        self.host = urlparse(base_url).netloc
        self.context = browser.new_context(viewport=viewport)
        self.problems: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("requestfailed", self._request_failed)
        self.page.on("response", self._response)

    def _route(self, route):
        url = route.request.url
        parsed = urlparse(url)
        if parsed.scheme in ("data", "blob", "about") or parsed.netloc == self.host:
            route.continue_()
        else:
            self.problems.append(f"request to another host: {url}")
            route.abort()

    def _console(self, msg):
        if msg.type == "error":
            self.problems.append(f"console error: {msg.text} ({msg.location.get('url', '')})")

    def _request_failed(self, request):
        failure = request.failure or ""
        if urlparse(request.url).netloc == self.host:
            self.problems.append(f"failed request: {request.url} ({failure})")

    def _response(self, response):
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def open(self, rel: str) -> None:
        self.page.goto(urljoin(self.base_url, rel), wait_until="load")
        self.page.wait_for_load_state("networkidle")
        # Wait for MathJax's first typeset pass, if the page loads MathJax.
        self.page.evaluate(
            """async () => {
                if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
                    await MathJax.startup.promise;
                }
            }"""
        )

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, base_url):
    visits: list[PageVisit] = []

    def _open(rel: str, viewport: dict[str, int] = DESKTOP) -> PageVisit:
        v = PageVisit(browser, base_url, viewport)
        visits.append(v)
        v.open(rel)
        return v

    yield _open
    for v in visits:
        v.close()


def screenshot_name(rel: str, suffix: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / (rel.removesuffix(".html").replace("/", "__") + f"{suffix}.png")


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------
def test_site_was_built():
    assert PAGES, f"no HTML pages under {SITE}: run `make book-build`"
    assert "book/intro.html" in PAGES
    assert "book/op-reference.html" in PAGES
    assert "book/bibliography.html" in PAGES
    for chapter in CHAPTERS:
        assert f"notebooks/{chapter}.html" in PAGES, f"chapter {chapter} was not built"


@pytest.mark.parametrize("rel", PAGES)
def test_page_loads_cleanly_and_renders(visit, rel):
    v = visit(rel)
    page = v.page
    html = (SITE / rel).read_text(encoding="utf-8")

    if 'class="math' in html:
        page.wait_for_selector("mjx-container", state="attached", timeout=15_000)
        assert page.locator("mjx-container").count() > 0, f"{rel}: math was not typeset"
        errors = page.locator("mjx-merror").all_inner_texts()
        assert not errors, f"{rel}: MathJax errors: {errors}"

    if WIDGET_STATE in html:
        views = html.count(WIDGET_VIEW)
        page.wait_for_selector(".jupyter-widgets", state="visible", timeout=15_000)
        rendered = page.locator(".widget-subarea .jupyter-widgets, .jupyter-widgets.widget-box")
        assert page.locator(".jupyter-widgets").count() >= views, (
            f"{rel}: {views} widget views in the page, fewer rendered"
        )
        assert rendered.count() > 0 or page.locator(".widget-slider").count() > 0

    page.screenshot(path=screenshot_name(rel, ""), full_page=True)
    assert not v.problems, f"{rel}:\n  " + "\n  ".join(v.problems)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_widget_chapters_embed_their_widgets(visit, chapter):
    notebook = ROOT / "notebooks" / f"{chapter}.ipynb"
    if not uses_widgets(notebook):
        pytest.skip(f"{chapter} does not use ipywidgets")
    rel = f"notebooks/{chapter}.html"
    html = (SITE / rel).read_text(encoding="utf-8")
    assert WIDGET_STATE in html, f"{rel}: no widget state embedded (did the chapter execute?)"
    v = visit(rel)
    v.page.wait_for_selector(".jupyter-widgets", state="visible", timeout=15_000)
    assert v.page.locator(".jupyter-widgets").count() > 0
    assert not v.problems, "\n".join(v.problems)


@pytest.mark.parametrize("rel", PAGES)
def test_no_sideways_scroll_on_a_phone(visit, rel):
    v = visit(rel, viewport=PHONE)
    widths = v.page.evaluate(
        """() => {
            const el = document.scrollingElement;
            return [el.scrollWidth, el.clientWidth];
        }"""
    )
    v.page.screenshot(path=screenshot_name(rel, "--390px"), full_page=False)
    assert widths[0] <= widths[1], f"{rel}: scrollWidth {widths[0]} > clientWidth {widths[1]}"


def test_toc_links_resolve(visit):
    v = visit("book/intro.html")
    hrefs = v.page.eval_on_selector_all(
        "nav.bd-docs-nav a.reference, .bd-sidebar-primary nav a.reference",
        "els => els.map(a => a.href)",
    )
    assert hrefs, "no table-of-contents links found in the sidebar"
    targets = sorted({h.split("#")[0] for h in hrefs})
    for target in targets:
        assert urlparse(target).netloc == v.host, f"toc link leaves the site: {target}"
        response = v.page.request.get(target)
        assert response.status == 200, f"toc link {target}: HTTP {response.status}"
    paths = {urlparse(t).path.lstrip("/") for t in targets}
    for required in ["book/op-reference.html", "book/bibliography.html"]:
        assert required in paths, f"{required} is not in the table of contents"
    for chapter in CHAPTERS:
        assert f"notebooks/{chapter}.html" in paths, f"chapter {chapter} missing from the toc"


def test_search_finds_jacobian(visit):
    v = visit("search.html?q=Jacobian")
    v.page.wait_for_selector("#search-results ul.search li", timeout=20_000)
    results = v.page.locator("#search-results ul.search li").all_inner_texts()
    assert results, "searching for 'Jacobian' found nothing"
    assert any("Jacobian" in r or "Op reference" in r or "Backprop" in r for r in results)
    assert not v.problems, "\n".join(v.problems)
