"""The bibliography: every key a page cites is in references.bib, every entry there is
complete, and the references page is in the table of contents. (The -W book build fails
on a missing key too; this finds one in a second, without a build.)"""

from __future__ import annotations

import re

import yaml
from pybtex.database import parse_file

from .conftest import ROOT, toc_pages

BIB = ROOT / "references.bib"
#: {cite}`a,b`, {cite:p}`a`, {cite:t}`a` and the other roles of sphinxcontrib-bibtex
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def cited_keys() -> dict[str, list[str]]:
    """``{key: [pages citing it]}`` over every page of the table of contents."""
    keys: dict[str, list[str]] = {}
    for page in toc_pages():
        for match in CITE.finditer((ROOT / f"{page}.md").read_text()):
            for key in match.group(1).split(","):
                keys.setdefault(key.strip(), []).append(page)
    return keys


def test_every_cited_key_is_in_the_bibliography() -> None:
    entries = parse_file(str(BIB)).entries
    cited = cited_keys()
    missing = {key: pages for key, pages in cited.items() if key not in entries}
    assert not missing, f"cited but not in references.bib: {missing}"
    assert len(cited) >= 10, f"only {len(cited)} works are cited"


def test_entries_are_complete() -> None:
    for key, entry in parse_file(str(BIB)).entries.items():
        assert entry.persons.get("author"), f"{key} has no author"
        for field in ("title", "year"):
            assert entry.fields.get(field), f"{key} has no {field}"
        assert re.fullmatch(r"(19|20)\d\d", entry.fields["year"]), (key, entry.fields["year"])
        venue = {"article": "journal", "inproceedings": "booktitle", "book": "publisher",
                 "misc": "url"}[entry.type]  # fmt: skip
        assert entry.fields.get(venue), f"{key} ({entry.type}) has no {venue}"


def test_the_references_page_lists_the_citations() -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["bibtex_bibfiles"] == [BIB.name]
    assert "references" in toc_pages()
    assert "```{bibliography}" in (ROOT / "references.md").read_text()


def test_plain_text_citations_are_roles() -> None:
    """A citation written as text ("LeCun et al., 1998") instead of a role is missed by
    the references page: the pages name authors only through {cite} roles."""
    pattern = re.compile(r"[A-Z][a-z]+ (et al\.|and [A-Z][a-z]+),? \(?(19|20)\d\d\)?")
    for page in toc_pages():
        text = (ROOT / f"{page}.md").read_text()
        assert not pattern.findall(text), f"{page}: {pattern.search(text)}"
