"""Write, in each chapter, the section that links every `companion` function the chapter calls.

    python scripts/chapter_api.py          # rewrite the sections
    python scripts/chapter_api.py --check  # exit 1 if a section is missing or out of date

The names come from the chapter's code cells: `from companion.m import f` gives companion.m.f, and
`from companion import m` gives every public companion.m.x that a cell uses as `m.x`. The section
"The code of this chapter" goes just before "Further reading", one line per name with the first
line of its docstring; tests/test_chapter_api.py checks that it is up to date.
"""

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## The code of this chapter"
CELL = re.compile(r"```\{code-cell\}[^\n]*\n(.*?)```", re.S)


def code_of(text):
    return "\n".join(CELL.findall(text))


def used_names(text):
    """Fully qualified names of the public companion objects that the code cells use."""
    code = code_of(text)
    names = set()
    for module, imported in re.findall(r"from companion\.(\w+) import (\([^)]*\)|[\w, ]+)", code):
        names.update(f"companion.{module}.{n.strip()}" for n in re.split(r"[,\s()]+", imported) if n.strip())
    for imported in re.findall(r"from companion import ([\w, ]+)", code):
        for module in (m.strip() for m in imported.split(",")):
            for attr in set(re.findall(rf"\b{module}\.(\w+)", code)):
                names.add(f"companion.{module}.{attr}")
    return sorted(n for n in names if public(n))


def public(name):
    _, module, attr = name.split(".")
    obj = getattr(importlib.import_module(f"companion.{module}"), attr, None)
    return (not attr.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == f"companion.{module}")


def summary(name):
    _, module, attr = name.split(".")
    doc = inspect.getdoc(getattr(importlib.import_module(f"companion.{module}"), attr)) or ""
    first = doc.split("\n\n")[0].replace("\n", " ").strip()
    first = re.split(r"(?<=[a-z0-9)])\. (?=[A-Z])", first)[0]  # the first sentence
    first = re.sub(r"``([^`]*)``", r"`\1`", first)  # reStructuredText literals to MyST
    return first.rstrip(".:")


def section(text, label):
    names = used_names(text)
    lines = [f"({label})=", HEADING, "",
             "Every function and class of `companion` that this chapter calls, linked to its reference "
             "page (the {ref}`API reference <api-reference>` lists them all):", ""]
    lines += [f"- {{py:obj}}`{name}`: {summary(name)}." for name in names]
    return "\n".join(lines) + "\n\n"


def updated(path):
    text = path.read_text()
    label = f"sec-{path.stem}-code"
    block = re.compile(rf"\({re.escape(label)}\)=\n{re.escape(HEADING)}\n.*?(?=\n## |\n\(\S+\)=\n## )", re.S)
    new = section(text, label)
    if block.search(text):
        return block.sub(lambda _: new.rstrip("\n") + "\n", text)
    anchor = text.index("\n## Further reading")
    return text[:anchor + 1] + new + text[anchor + 1:]


def chapters():
    return sorted(p for p in (ROOT / "book").glob("*.md") if used_names(p.read_text()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for path in chapters():
        new = updated(path)
        if new != path.read_text():
            stale.append(path.name)
            if not args.check:
                path.write_text(new)
    verb = "out of date" if args.check else "updated"
    print(f"{len(stale)} chapter(s) {verb}: {', '.join(stale) or '-'}")
    sys.exit(1 if args.check and stale else 0)


if __name__ == "__main__":
    main()
