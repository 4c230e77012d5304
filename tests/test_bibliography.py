"""The bibliography gives every cited work with its venue and year."""

import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIB = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
ENTRIES = {m.group(2): (m.group(1).lower(), m.group(3))
           for m in re.finditer(r"@(\w+)\{([^,\s]+),(.*?)\n\}", BIB, flags=re.S)}
VENUE = {"article": "journal", "inproceedings": "booktitle", "incollection": "booktitle", "book": "publisher",
         "phdthesis": "school", "techreport": "institution"}


def fields(body):
    return {name.lower() for name in re.findall(r"^\s*(\w+)\s*=", body, flags=re.M)}


def test_every_entry_has_a_year_and_a_venue():
    assert len(ENTRIES) >= 40
    for key, (kind, body) in ENTRIES.items():
        have = fields(body)
        assert "year" in have, f"{key} has no year"
        venue = VENUE.get(kind)
        assert venue in have if venue else have & {"journal", "booktitle", "publisher", "howpublished", "eprint"}, (
            f"{key} ({kind}) has no venue")


def test_every_entry_is_cited_and_every_citation_has_an_entry():
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "book").rglob("*.md"))
    cited = set()
    for keys in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", sources):
        cited |= {k.strip() for k in keys.split(",")}
    assert cited <= set(ENTRIES), f"cited but not in references.bib: {sorted(cited - set(ENTRIES))}"
    assert set(ENTRIES) <= cited, f"in references.bib but never cited: {sorted(set(ENTRIES) - cited)}"


def _plain(text):
    """'Hyv{\\"a}rinen' and 'Hyvärinen' both become 'Hyvarinen'."""
    text = re.sub(r"\{\\.\s*\{?(\w)\}?\}", r"\1", text)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def test_every_citation_in_the_package_is_in_the_bibliography():
    # An author–year citation in a docstring ("Song & Ermon 2019", "Gretton et al. 2012") names
    # its first author and year; the bibliography must hold that work, so the API reference and the
    # book cite the same sources.
    by_year = {}
    for kind, body in ENTRIES.values():
        year = re.search(r"year\s*=\s*\{?(\d{4})", body).group(1)
        authors = re.search(r"author\s*=\s*\{(.*?)\},?\s*$", body, flags=re.M | re.S)
        by_year.setdefault(year, []).append(_plain(authors.group(1)) if authors else "")
    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "companion").glob("*.py")))
    cited = set(re.findall(r"\b([A-Z][\w\-]+)(?: et al\.| (?:and|&) [A-Z][\w\-]+)? ((?:19|20)\d\d)\b", source))
    assert len(cited) >= 30
    missing = sorted(f"{name} {year}" for name, year in cited
                     if not any(_plain(name) in authors for authors in by_year.get(year, [])))
    assert not missing, f"cited in companion/ but not in book/references.bib: {missing}"
