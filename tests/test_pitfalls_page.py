"""Checks of the "Pitfalls and errata" appendix (book/pitfalls.md).

Every audited erratum E01–E85 has exactly one entry; every entry has a Wrong, a Right and a
Guarded-by part; and every Guarded-by link names a test that exists in tests/, with a URL that
points at the file named in the link text.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "book" / "pitfalls.md"
TESTS = ROOT / "tests"
URL = "https://github.com/score-based-book/score-based-models/blob/main/"
ERRATA = [f"E{i:02d}" for i in range(1, 86)]

HEADING = re.compile(r"^### (E\d{2}|N\d+)\b(.*)$", re.M)
LINK = re.compile(r"\[`(tests/[^`:]+\.py)::([A-Za-z_][\w]*(?:::[A-Za-z_]\w*)?)`\]\(([^)\s]+)\)")


def page():
    return PAGE.read_text(encoding="utf-8")


def entries():
    """(id, body) for every entry: the text from its heading to the next heading."""
    text = page()
    heads = list(HEADING.finditer(text))
    bounds = [m.start() for m in heads[1:]] + [len(text)]
    out = []
    for m, end in zip(heads, bounds):
        body = text[m.end():end]
        body = re.split(r"^#{1,2} ", body, flags=re.M)[0]  # stop at the next section heading
        out.append((m.group(1), m.group(2), body))
    return out


def test_page_starts_with_its_label_and_title():
    lines = page().splitlines()
    assert lines[0] == "(appendix-pitfalls)="
    assert lines[1] == "# Pitfalls and errata"


def test_every_erratum_has_exactly_one_entry():
    ids = [i for i, _, _ in entries()]
    for e in ERRATA:
        assert ids.count(e) == 1, f"{e} appears {ids.count(e)} times as an entry"
    extra = [i for i in ids if i.startswith("E") and i not in ERRATA]
    assert not extra, f"entries outside E01–E85: {extra}"
    added = [i for i in ids if i.startswith("N")]
    assert len(added) == len(set(added)), "an N-entry id is used twice"
    assert {"N1", "N2"} <= set(added)


def test_every_entry_has_a_title_wrong_right_and_guard():
    for i, title, body in entries():
        assert re.match(r"\s*—\s*\S", title), f"{i} has no one-line title"
        for part in ("**Wrong:**", "**Right:**", "**Guarded by:**"):
            assert body.count(part) == 1, f"{i}: {part} appears {body.count(part)} times"
        assert body.index("**Wrong:**") < body.index("**Right:**") < body.index("**Guarded by:**")
        assert re.search(r"[Ss]eeds? 00[0-4]", body), f"{i} does not say which seed note it comes from"
        guard = body[body.index("**Guarded by:**"):].split("\n\n")[0]
        assert LINK.search(guard), f"{i}: the Guarded-by line has no test link"


def _defined_tests(path):
    """Top-level test functions and Class::method names defined in a test file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(f"{node.name}::{sub.name}")
    return names


def _guard_links():
    links = []
    for i, _, body in entries():
        guard = body[body.index("**Guarded by:**"):].split("\n\n")[0]
        links += [(i, *m.groups()) for m in LINK.finditer(guard)]
    return links


def test_guard_links_exist():
    assert len(_guard_links()) >= len(ERRATA)


@pytest.mark.parametrize("entry,file,name,url", _guard_links(), ids=lambda v: str(v))
def test_guard_link_names_an_existing_test(entry, file, name, url):
    path = ROOT / file
    assert path.parent == TESTS and path.exists(), f"{entry}: {file} does not exist"
    assert name in _defined_tests(path), f"{entry}: {name} is not defined in {file}"
    assert url == URL + file, f"{entry}: the link points at {url}, not at {file}"


def test_no_malformed_test_links():
    """Every mention of a tests/ file in a link uses the exact `file::name` form checked above."""
    text = page()
    loose = re.findall(r"\]\((https?://[^)]*tests/[^)]*)\)", text)
    assert len(loose) == len(LINK.findall(text))
