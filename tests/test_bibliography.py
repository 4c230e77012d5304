"""The bibliography gives every cited work with its venue and year."""

import re
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
