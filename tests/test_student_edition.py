"""The student edition (scripts/student_edition.py) holds every exercise and no solution.

The test builds the edition, and a control build of the same configuration with the solutions
kept, from the verified chapter outputs (no chapter executes). Sentences and code lines are
taken from the MyST sources, between solution-start and solution-end, and looked up in the
text of every HTML page: the control build shows that the lookup finds them when they are there,
and the student edition must have lost every one. The exercises' own sentences must
survive in the student edition.
"""

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(p for p in BOOK.glob("*.md") if "{solution-start}" in p.read_text())


def blocks(text, kind):
    """The source lines between each {kind}-start and {kind}-end directive."""
    return re.findall(r"```\{%s-start\}.*?\n```\n(.*?)```\{%s-end\}" % (kind, kind), text, flags=re.S)


def normalise(text):
    return " ".join(text.replace("’", "'").replace("‘", "'").split())


def snippets(block):
    """Code lines of at least 30 characters, and stretches of at least six plain words of prose
    (outside math, roles, links and emphasis), of one exercise or solution."""
    code, prose, in_code, in_math = [], [], False, False
    for line in block.splitlines():
        if line.startswith("```"):
            in_code = line.startswith("```{code-cell}") and not in_code
        elif line.strip() == "$$":
            in_math = not in_math
        elif in_code:
            if len(line.strip()) >= 30 and not line.strip().startswith("#"):
                code.append(normalise(line))
        elif not in_math and not line.startswith(":"):
            prose.append(line)
    text = re.sub(r"\$[^$]*\$|\{[^}]*\}`[^`]*`|`[^`]*`|\[[^\]]*\]\([^)]*\)|[*_]", "|", "\n".join(prose))
    found = list(code)
    for piece in text.split("|"):
        run = []
        for word in normalise(piece).split() + [""]:  # "" ends the last run
            if re.fullmatch(r"[A-Za-z][A-Za-z'-]*[,.;:?!]?", word):
                run.append(word)
                continue
            if len(run) >= 6:
                found.append(" ".join(run))
            run = []
    return found


def outside_solutions():
    """The sources with the solutions cut out: a snippet also found here is not evidence."""
    texts = [re.sub(r"```\{solution-start\}.*?```\{solution-end\}", " ", p.read_text(), flags=re.S)
             for p in BOOK.rglob("*.md")]
    return normalise("\n".join(texts))


def site_text(html_dir):
    pages = []
    for page in html_dir.rglob("*.html"):
        text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page.read_text(), flags=re.S)
        text = html.unescape(re.sub(r"<[^>]+>", "", text))
        pages.append(normalise(text))
    return "\n".join(pages)


def build(out, *extra):
    """Build into out and return the HTML folder."""
    subprocess.run([sys.executable, "scripts/prime_cache.py"], cwd=ROOT, check=True, capture_output=True)
    result = subprocess.run([sys.executable, "scripts/student_edition.py", "--out", str(out), *extra],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out / "_build" / "html"


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return site_text(build(tmp_path_factory.mktemp("student")))


@pytest.fixture(scope="module")
def control_html(tmp_path_factory):
    return build(tmp_path_factory.mktemp("control"), "--keep-solutions")


@pytest.fixture(scope="module")
def control(control_html):
    return site_text(control_html)


def test_every_chapter_with_exercises_has_solutions_to_look_for():
    assert len(CHAPTERS) >= 9
    for chapter in CHAPTERS:
        solutions = blocks(chapter.read_text(), "solution")
        assert solutions, chapter.name
        assert sum(len(snippets(b)) for b in solutions) >= len(solutions), chapter.name


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_solution_reaches_the_student_edition(chapter, student, control):
    elsewhere = outside_solutions()
    pieces = [p for b in blocks(chapter.read_text(), "solution") for p in snippets(b) if p not in elsewhere]
    shown = [p for p in pieces if p in control]  # code of hidden cells (checks) is on no page
    assert len(shown) >= max(3, 0.7 * len(pieces)), (
        f"the lookup misses {chapter.name}'s solutions in the control build: {set(pieces) - set(shown)}")
    # A line may also appear elsewhere (an API page quotes it): the student edition must have
    # fewer copies than the control.
    leaked = [p for p in shown if student.count(p) >= control.count(p)]
    assert not leaked, f"solution text of {chapter.name} in the student edition: {leaked[:3]}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_the_exercises_are_in_the_student_edition(chapter, student):
    pieces = [p for b in blocks(chapter.read_text(), "exercise") for p in snippets(b)]
    assert pieces, chapter.name
    missing = [p for p in pieces if p not in student]
    assert not missing, f"exercise text of {chapter.name} missing: {missing[:3]}"


def test_the_api_reference_documents_every_public_function(control_html):
    """Every public function and class of every companion module has an entry in the built
    site's inventory (the API reference pages, generated by autodoc)."""
    import importlib
    import inspect
    import pkgutil

    from sphinx.util.inventory import InventoryFile

    import companion

    with open(control_html / "objects.inv", "rb") as f:
        inventory = InventoryFile.load(f, "", lambda base, uri: uri)
    documented = set(inventory.get("py:function", {})) | set(inventory.get("py:class", {}))
    public = set()
    for info in pkgutil.iter_modules(companion.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"companion.{info.name}")
        public |= {f"{module.__name__}.{name}" for name, obj in vars(module).items()
                   if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                   and obj.__module__ == module.__name__}
    assert len(public) > 100
    assert not public - documented, f"not in the API reference: {sorted(public - documented)}"
