"""Static checks of the built website (_build/html), run by the test command after the build.

Every page with math must load MathJax from the book's own _static folder (it renders offline),
have a title, show no error output, and offer launch buttons that open a notebook the
repository really has.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"


def problems(page):
    text = page.read_text()
    found = []
    scripts = re.findall(r'<script[^>]+src="([^"]*mathjax[^"]*)"', text, flags=re.I)
    if 'class="math' in text and not scripts:
        found.append("math on the page but no MathJax script")
    if any("://" in s for s in scripts):
        found.append(f"MathJax not served locally: {scripts}")
    for src in scripts:
        if not (page.parent / src.split("?")[0]).resolve().is_file():
            found.append(f"MathJax script missing: {src}")
    if not re.search(r"<title>[^<]+</title>", text):
        found.append("no title")
    if "Traceback (most recent call last)" in text or 'class="output traceback' in text:
        found.append("a traceback is shown")
    for notebook in set(re.findall(r"(?:colab|mybinder)[^\"']*?(book/[\w.-]+\.ipynb)", text)):
        if not (ROOT / notebook).is_file():
            found.append(f"a launch button opens {notebook}, which does not exist")
    return found


def main():
    pages = sorted((HTML / "book").glob("*.html"))
    if not pages:
        sys.exit("no pages in _build/html/book: build the book first")
    failures = {p.name: problems(p) for p in pages}
    failures = {k: v for k, v in failures.items() if v}
    for name, found in failures.items():
        print(f"{name}: " + "; ".join(found))
    print(f"checked {len(pages)} pages: {len(pages) - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
