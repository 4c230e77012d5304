"""Render every page of the built website in headless Chromium and check what a reader sees.

    python scripts/browser_check.py [--html _build/html] [--shots _build/screenshots]

Serves the built site on a local port, opens each page in the system's Chromium (Debian's
`chromium`, driven by Playwright; no browser is downloaded), waits until MathJax has typeset the
page, and fails when
  - math is left untypeset, or MathJax marks an error in a formula;
  - an image does not load, or any other file the page requests is missing;
  - the page shows an error: a traceback or stderr output, or a script error in the console;
  - the page has no title;
  - an internal link points to a missing page or to an anchor that is not on its page.
It saves a screenshot of every page (the whole page, scaled to half size) under `--shots`.
"""

import argparse
import functools
import http.server
import re
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]

# Runs in the page once it has loaded: waits for MathJax, then reports what is wrong.
INSPECT = """async () => {
  if (document.readyState !== 'complete')
    await new Promise(done => window.addEventListener('load', done, {once: true}));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const problems = [];
  const maths = [...document.querySelectorAll('.math')];
  const untypeset = maths.filter(m => !m.querySelector('mjx-container'));
  if (untypeset.length) problems.push(`${untypeset.length} of ${maths.length} formulas not typeset, first: `
      + untypeset[0].textContent.trim().slice(0, 80));
  for (const e of document.querySelectorAll('mjx-merror, [data-mjx-error]'))
    problems.push('MathJax error: ' + (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 120));
  // Dollar or backslash-bracket math that the parser left as plain text.
  const article = document.querySelector('article') || document.body;
  const clone = article.cloneNode(true);
  for (const e of clone.querySelectorAll('pre, code, mjx-container, script, style, .math')) e.remove();
  const raw = clone.textContent.match(/\\$[^$\\n]{0,80}[\\\\^_{}][^$\\n]{0,80}\\$|\\\\\\(|\\\\\\[/);
  if (raw) problems.push('math left as text: ' + raw[0].slice(0, 80));
  for (const img of document.querySelectorAll('img'))
    if (!img.complete || img.naturalWidth === 0) problems.push('image does not load: ' + img.getAttribute('src'));
  if (!document.title.trim()) problems.push('no title');
  for (const o of document.querySelectorAll('.output.traceback, .output.stderr, .output.error'))
    problems.push('error output shown: ' + o.textContent.trim().slice(0, 120));
  if (/Traceback \\(most recent call last\\)/.test(document.body.innerText)) problems.push('a traceback is shown');
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  return {problems, links, ids};
}"""


def serve(directory):
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a page closed before a response was sent (a broken pipe) is not the site's fault


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def inspect(page, attempts=3):
    """Run INSPECT, again on the new page if the page redirects itself (index.html does): the
    evaluation then fails in the old page, or finds the new one before it has a body."""
    for attempt in range(attempts):
        try:
            return page.evaluate(INSPECT)
        except PlaywrightError:
            if attempt == attempts - 1:
                raise
            page.wait_for_timeout(500)
            page.wait_for_load_state("load")


def pages_of(html):
    skip = {"_static", "_sources", "_images", "_downloads"}
    return sorted(p.relative_to(html) for p in html.rglob("*.html") if not skip & set(p.relative_to(html).parts))


def check_links(html, base, visited, link_sources):
    """Internal links: the target file exists, and a #fragment names an element of its page."""
    problems = {}
    for page, links in link_sources.items():
        for link in links:
            url, fragment = urldefrag(link)
            if not url.startswith(base):
                continue
            path = unquote(urlparse(url).path).lstrip("/") or "index.html"
            if path.endswith("/"):
                path += "index.html"
            target = html / path
            if not target.is_file():
                problems.setdefault(page, []).append(f"broken link: {path}")
            elif fragment and path in visited and fragment not in visited[path]:
                problems.setdefault(page, []).append(f"missing anchor: {path}#{fragment}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    parser.add_argument("--shots", type=Path, default=ROOT / "_build" / "screenshots")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    if not (args.html / "index.html").is_file():
        sys.exit(f"no built site in {args.html}: build the book first (scripts/book.sh)")
    if not Path(args.chromium).is_file():
        sys.exit(f"Chromium not found at {args.chromium}: install it (Debian: apt-get install chromium) "
                 "or pass --chromium PATH")
    shutil.rmtree(args.shots, ignore_errors=True)
    server = serve(args.html)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    problems, visited, link_sources = {}, {}, {}
    pages = pages_of(args.html)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=0.5)
        for rel in pages:
            name = rel.as_posix()
            page = context.new_page()
            found = []
            page.on("pageerror", lambda e, found=found: found.append(f"script error: {e}"))
            page.on("console", lambda m, found=found: m.type == "error" and found.append(f"console error: {m.text}"))
            page.on("response", lambda r, found=found: r.status >= 400 and found.append(f"{r.status}: {r.url}"))
            page.goto(base + name, wait_until="load")
            result = inspect(page)
            found += result["problems"]
            visited[name] = set(result["ids"])
            link_sources[name] = result["links"]
            shot = args.shots / rel.with_suffix(".png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            if found:
                problems[name] = found
            page.close()
        browser.close()
    server.shutdown()
    for page, found in check_links(args.html, base, visited, link_sources).items():
        problems.setdefault(page, []).extend(found)
    for page, found in problems.items():
        print(f"{page}:\n  " + "\n  ".join(found))
    print(f"browser check: {len(pages)} pages, {len(pages) - len(problems)} passed, {len(problems)} failed; "
          f"screenshots in {args.shots}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
