"""Every chapter links each `companion` function it calls (scripts/chapter_api.py writes the links)."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("chapter_api", ROOT / "scripts" / "chapter_api.py")
chapter_api = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chapter_api)
CHAPTERS = chapter_api.chapters()


def test_every_executable_chapter_calls_companion():
    executable = sorted(p for p in (ROOT / "book").glob("*.md") if "```{code-cell}" in p.read_text())
    assert CHAPTERS == executable and len(CHAPTERS) >= 9


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_the_chapter_links_every_function_it_calls(chapter):
    text = chapter.read_text()
    linked = set(re.findall(r"\{py:(?:obj|func|class)\}`([\w.]+)`", text))
    missing = set(chapter_api.used_names(text)) - linked
    assert not missing, f"{chapter.name} calls but does not link {sorted(missing)}: run python scripts/chapter_api.py"
    assert chapter_api.updated(chapter) == text, f"{chapter.name}: run python scripts/chapter_api.py"


def test_the_name_finder_sees_both_import_forms():
    cell = ("```{code-cell} ipython3\nfrom companion import plotting, schedules\n"
            "from companion.samplers import (langevin,\n    mala)\n"
            "x = schedules.geometric(1, 0.1, 3)\nplotting.image_grid(x)\n```\n")
    assert chapter_api.used_names(cell) == [
        "companion.plotting.image_grid", "companion.samplers.langevin", "companion.samplers.mala",
        "companion.schedules.geometric"]
