"""Open every page of the built book in headless Chromium, as an offline reader would.

Usage: python tools/browser_check.py SITE [SITE ...] [--screenshots DIR]      (make browser-test)

Each SITE is a built HTML folder (_build/html, _build/student/html). Every page is opened from
file:// with the network cut off (any request that leaves the folder fails the page: the book
must be complete offline), and, once MathJax has typeset it, checked for
  - raw TeX delimiters \\( or \\[ left in the text (math that was not typeset),
  - MathJax error nodes (an undefined macro, a parse error),
  - images that did not load,
  - JavaScript errors and console errors,
  - internal links to a missing file or to an anchor that the target page does not have,
  - at 1280 px (a laptop), a display equation or a block of code wider than its box: the reader
    would have to scroll inside it (every toggle and dropdown is opened first; output blocks,
    ```text blocks of printed output in the text, printed and pandas tables may scroll inside
    their own box and are not checked),
  - at 390 px (a phone), a page that scrolls sideways: wide content must scroll inside its own
    box; the message names the elements that stick out past the screen's right edge.
A screenshot of each chapter's first screen at both widths goes to DIR/<SITE with / as ->/
(<page>.png and <page>-390px.png) for a quick look.
Chromium is Debian's (package ``chromium``), driven by Playwright without its own browser download.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from bs4 import BeautifulSoup
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Resolves when MathJax (if the page asks for it) has typeset the page: 'typeset', 'no math',
# or 'not started' when the page configures MathJax but the script never ran (5 s).
WAIT_FOR_MATHJAX = """async () => {
    if (!window.MathJax) return 'no math';
    for (let i = 0; i < 100 && !(MathJax.startup && MathJax.startup.promise); i++)
        await new Promise(r => setTimeout(r, 50));
    if (!(MathJax.startup && MathJax.startup.promise)) return 'not started';
    await MathJax.startup.promise;
    return 'typeset';
}"""

# Text outside code, with the math MathJax rendered removed: raw TeX delimiters left here were
# not typeset. Also MathJax's error nodes, images that failed, and every link target.
INSPECT = """async () => {
    const clone = document.body.cloneNode(true);
    clone.querySelectorAll('pre, code, script, style, mjx-container, .MathJax, textarea')
         .forEach(e => e.remove());
    const text = clone.textContent;
    const raw = [];
    for (const delimiter of ['\\\\(', '\\\\[', '\\\\begin{']) {
        let at = text.indexOf(delimiter);
        if (at >= 0) raw.push(text.slice(Math.max(0, at - 30), at + 50).replace(/\\s+/g, ' '));
    }
    const errors = [...document.querySelectorAll('mjx-merror, [data-mjx-error]')]
        .map(e => e.getAttribute('data-mjx-error') || e.textContent);
    const broken = [];
    for (const img of document.images) {
        img.loading = 'eager';
        try { await img.decode(); } catch (e) { broken.push(img.getAttribute('src')); }
    }
    const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
    return {raw, errors, broken, links};
}"""


# At the laptop width: display equations (MathJax's container: its content's width, scrollWidth,
# against the box it shows in, clientWidth) and code blocks (cells' input and code in the text;
# not outputs, nor ```text blocks, which show printed output) that overflow. Every toggle and
# dropdown is opened first, so hidden code counts.
# Each finding names the section it is in and the start of its TeX or of its longest line.
TOO_WIDE = r"""() => {
    document.querySelectorAll('details').forEach(d => d.open = true);
    document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
    const where = e => {  // an exercise's or solution's id, else the section's
        const box = e.closest('.admonition[id], section[id]:not([id$="-content"])');
        return box ? '#' + box.id : 'the page';
    };
    const found = [];
    const items = window.MathJax && MathJax.startup && MathJax.startup.document
        ? MathJax.startup.document.getMathItemsWithin(document.body) : [];
    for (const box of document.querySelectorAll('mjx-container[display="true"]')) {
        if (box.scrollWidth <= box.clientWidth + 1) continue;
        const item = items.find(i => i.typesetRoot === box);
        const tex = item ? item.math.replace(/\s+/g, ' ').trim() : box.textContent;
        found.push(`display equation in ${where(box)} is ${box.scrollWidth} px wide, its box `
                   + `${box.clientWidth} px: ${tex.slice(0, 70)}`);
    }
    for (const pre of document.querySelectorAll('div.highlight pre')) {
        if (pre.closest('.cell_output, .output, .highlight-text, .highlight-none')) continue;
        if (pre.scrollWidth <= pre.clientWidth + 1) continue;
        const longest = pre.textContent.split('\n').reduce((a, b) => b.length > a.length ? b : a, '');
        const kind = pre.closest('.cell_input') ? 'code cell' : 'code block';
        found.push(`${kind} in ${where(pre)} is ${pre.scrollWidth} px wide, its box `
                   + `${pre.clientWidth} px; longest line (${longest.length} characters): `
                   + `${longest.trim().slice(0, 60)}`);
    }
    return found;
}"""

# At the phone width: does the page itself scroll sideways? If so, which elements stick out past
# the right edge (the outermost ones, at most five).
SIDEWAYS = """() => {
    const page = document.scrollingElement || document.documentElement;
    const width = page.clientWidth;
    window.scrollTo(page.scrollWidth, 0);
    const scrolled = window.scrollX;
    window.scrollTo(0, 0);
    if (page.scrollWidth <= width + 1 && scrolled === 0) return null;
    const out = [];
    for (const e of document.body.querySelectorAll('*')) {
        const r = e.getBoundingClientRect();
        if (r.right <= width + 1 || r.width === 0) continue;
        if (out.some(o => o.contains(e))) continue;
        out.push(e);
    }
    const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
        + (e.classList.length ? '.' + [...e.classList].slice(0, 3).join('.') : '');
    return {scroll: page.scrollWidth, width,
            culprits: out.slice(0, 5).map(e => `${name(e)} (${Math.round(e.getBoundingClientRect().right)} px)`)};
}"""


@functools.cache
def anchors(page: Path) -> frozenset[str]:
    soup = BeautifulSoup(page.read_text(errors="replace"), "html.parser")
    return frozenset(e["id"] for e in soup.find_all(id=True)) | frozenset(
        e["name"] for e in soup.find_all("a", attrs={"name": True}))


def link_problem(url: str, site: Path) -> str | None:
    """Why an internal link is broken, or None (external links are not followed)."""
    parsed = urlparse(url)
    if parsed.scheme != "file":
        return None
    target = Path(unquote(parsed.path))
    if target.is_dir():
        target = target / "index.html"
    if not target.exists():
        return f"missing file {target.relative_to(site) if target.is_relative_to(site) else target}"
    fragment = unquote(parsed.fragment)
    if fragment and target.suffix == ".html" and fragment not in anchors(target):
        return f"missing anchor {target.name}#{fragment}"
    return None


def redirect_target(page_path: Path) -> str | None:
    """The URL a redirect page (``<meta http-equiv="refresh">``, like the root index.html) sends to."""
    meta = BeautifulSoup(page_path.read_text(errors="replace"), "html.parser").find(
        "meta", attrs={"http-equiv": lambda v: v and v.lower() == "refresh"})
    if meta is None:
        return None
    content = meta.get("content", "")
    target = content[content.lower().find("url=") + 4:].strip() if "url=" in content.lower() else ""
    return (page_path.parent / target).resolve().as_uri() if target else page_path.as_uri()


def check_page(context, page_path: Path, site: Path, screenshot: Path | None) -> list[str]:
    """Everything but the phone-width check, at the context's (laptop) width."""
    if (target := redirect_target(page_path)) is not None:
        problem = link_problem(target, site)
        return [f"redirects to a broken target: {problem}"] if problem else []
    problems: list[str] = []
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"JavaScript error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed to load {r.url}: {r.failure}")
            if r.url.startswith("file:") else None)

    def offline(route):
        if route.request.url.startswith(("file:", "data:", "blob:", "about:")):
            route.continue_()
        else:
            problems.append(f"requests an external resource: {route.request.url}")
            route.abort()

    page.route("**/*", offline)
    page.goto(page_path.as_uri(), wait_until="load")
    if page.evaluate(WAIT_FOR_MATHJAX) == "not started":
        problems.append("MathJax did not start")
    found = page.evaluate(INSPECT)
    problems += [f"raw TeX left in the text: ...{snippet}..." for snippet in found["raw"]]
    problems += [f"MathJax error: {error}" for error in found["errors"]]
    problems += [f"image did not load: {src}" for src in found["broken"]]
    problems += sorted({f"broken link: {p}" for url in found["links"] if (p := link_problem(url, site))})
    if screenshot is not None:
        page.evaluate("window.scrollTo(0, 0)")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=screenshot)
    problems += page.evaluate(TOO_WIDE)
    page.close()
    return problems


def check_phone(context, page_path: Path, screenshot: Path | None) -> list[str]:
    """At the phone width: the page must not scroll sideways (wide content scrolls in its box)."""
    if redirect_target(page_path) is not None:
        return []
    page = context.new_page()
    page.route("**/*", lambda route: route.continue_()
               if route.request.url.startswith(("file:", "data:", "blob:", "about:")) else route.abort())
    page.goto(page_path.as_uri(), wait_until="load")
    page.evaluate(WAIT_FOR_MATHJAX)
    found = page.evaluate(SIDEWAYS)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=screenshot)
    page.close()
    if found is None:
        return []
    return [f"scrolls sideways at {PHONE['width']} px: the page is {found['scroll']} px wide, "
            f"the screen {found['width']} px; sticking out: {', '.join(found['culprits']) or 'nothing found'}"]


MATHJAX = Path(__file__).resolve().parent.parent / "vendor" / "mathjax-3.2.2" / "tex-svg-full.js"
# Pages with one fault of each kind the check looks for, and what it must report for each.
FAULTY_PAGES = {
    "faulty.html": (rf"""<!DOCTYPE html><html><head>
<script>window.MathJax = {{tex: {{inlineMath: [['\\(', '\\)']], packages: {{'[-]': ['noundefined']}}}}}};</script>
<script defer src="{MATHJAX.as_uri()}"></script></head><body>
<p><span class="math">\(\undefinedmacro x\)</span></p>
<p><code>not math: \(x\)</code> and <span class="mathjax_ignore">left raw: \(y\) \begin{{align}} y \end{{align}}</span></p>
<img src="missing.png"> <img src="https://example.invalid/remote.png">
<a href="missing.html">a</a> <a href="#nowhere">b</a> <a href="#here" id="here">c</a> <a href="sub/">d</a>
<script>undefinedFunction();</script><script>console.error("planted");</script>
</body></html>""", ["MathJax error", "left raw: \\(y", "\\begin{align}", "image did not load: missing.png",
                    "external resource", "JavaScript error", "console error: planted", "missing file missing.html",
                    "missing anchor faulty.html#nowhere", "missing file sub/index.html"]),
    "no-mathjax.html": ("""<html><head><script>window.MathJax = {};</script>
<script src="missing-mathjax.js"></script></head><body><p>text</p></body></html>""",
                        ["MathJax did not start", "failed to load"]),
    "redirect.html": ("""<html><head><meta http-equiv="refresh" content="0; URL=gone.html"></head></html>""",
                      ["redirects to a broken target: missing file gone.html"]),
    # In a 300 px column: an equation, a code cell, a code block and a hidden (closed <details>)
    # code block that are too wide; an equation, code and an output block that are not checked
    # or fit (sections #fits and #output must not be reported).
    "too-wide.html": (rf"""<!DOCTYPE html><html><head>
<script defer src="{MATHJAX.as_uri()}"></script></head><body><main style="width: 300px">
<section id="wide-equation"><div class="math">\[ {" + ".join(f"x_{{{i}}}" for i in range(40))} \]</div></section>
<section id="wide-cell"><div class="cell_input"><div class="highlight"><pre>{"x = 1; " * 20}</pre></div></div></section>
<section id="wide-block"><div class="highlight"><pre>short
{"y = 2; " * 20}</pre></div></section>
<section id="hidden"><details><summary>code</summary><div class="highlight"><pre>{"z = 3; " * 20}</pre></div></details></section>
<section id="fits"><div class="math">\[ x + y \]</div><div class="highlight"><pre>x = 1</pre></div></section>
<section id="output"><div class="cell_output"><div class="highlight"><pre>{"0.123 " * 40}</pre></div></div>
<div class="highlight-text"><div class="highlight"><pre>printed: {"0.123 " * 40}</pre></div></div></section>
</main></body></html>""", ["display equation in #wide-equation", "x_{0} + x_{1}", "code cell in #wide-cell",
                            "code block in #wide-block", "longest line (140 characters): y = 2;",
                            "code block in #hidden"]),
}
# Pages opened at the phone width: one that scrolls sideways (two elements stick out), and one
# whose wide content scrolls inside its own box, which must not be reported.
PHONE_PAGES = {
    "sideways.html": ("""<!DOCTYPE html><html><body><p>text</p>
<div id="wide" style="width: 600px">wide</div><table id="table"><tr><td style="min-width: 500px">cell</td></tr></table>
</body></html>""", ["scrolls sideways at 390 px", "div#wide (6", "table#table ("]),
    "scrolls-inside.html": ("""<!DOCTYPE html><html><body><p>text</p>
<div style="overflow-x: auto"><div style="width: 900px">wide, in its own box</div></div>
</body></html>""", []),
}


def self_test(context, phone_context) -> list[str]:
    """Planted faults that the check does not report, and false alarms (empty: the check works)."""
    missed = []
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "sub").mkdir()
        for name, (html, expected) in FAULTY_PAGES.items():
            Path(folder, name).write_text(html)
            report = "\n".join(check_page(context, Path(folder, name), Path(folder), None))
            missed += [f"{name}: {fault}" for fault in expected if fault not in report]
            if "not math" in report:
                missed.append(f"{name}: reported TeX inside <code>, which is not math")
            if "#fits" in report or "#output" in report:
                missed.append(f"{name}: reported content that fits, or an output block")
        for name, (html, expected) in PHONE_PAGES.items():
            Path(folder, name).write_text(html)
            report = "\n".join(check_phone(phone_context, Path(folder, name), None))
            missed += [f"{name}: {fault}" for fault in expected if fault not in report]
            if report and not expected:
                missed.append(f"{name}: false alarm: {report}")
    return missed


def chromium_executable() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    sys.exit("browser check: no chromium on PATH; install Debian's package: apt-get install -y chromium")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sites", nargs="+", type=Path)
    parser.add_argument("--screenshots", type=Path)
    args = parser.parse_args()
    failures = 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT)
        phone = browser.new_context(viewport=PHONE)
        missed = self_test(context, phone)
        context.close()
        phone.close()
        planted = sum(len(expected) for pages in (FAULTY_PAGES, PHONE_PAGES) for _, expected in pages.values())
        print(f"self-test: {planted - len(missed)} of {planted} planted faults found"
              + (f"; MISSED: {missed}" if missed else ""))
        failures += bool(missed)
        for site in args.sites:
            label = "-".join(site.parts).lstrip("/-")  # _build/student/html -> _build-student-html
            site = site.resolve()
            if not (site / "index.html").exists():
                print(f"{site}: not built (no index.html)")
                failures += 1
                continue
            pages = sorted(p for p in site.rglob("*.html") if not {"_static", "_sources"} & set(p.parts))
            context = browser.new_context(viewport=VIEWPORT)
            phone = browser.new_context(viewport=PHONE)
            bad = 0
            for page_path in pages:
                name = page_path.relative_to(site)
                is_chapter = name.parts[0] == "book"
                shots = args.screenshots / label if args.screenshots and is_chapter else None
                problems = check_page(context, page_path, site, shots and shots / f"{page_path.stem}.png")
                problems += check_phone(phone, page_path, shots and shots / f"{page_path.stem}-390px.png")
                if problems:
                    bad += 1
                    print(f"FAILED {label}/{name}")
                    for problem in problems:
                        print(f"    {problem}")
            context.close()
            phone.close()
            print(f"{site}: {len(pages)} pages opened, {bad} with problems")
            failures += bad
        browser.close()
    if args.screenshots:
        print(f"screenshots of each chapter's first screen (1280 and 390 px): {args.screenshots}/")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
