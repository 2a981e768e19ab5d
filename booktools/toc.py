"""The table of contents (``_toc.yml``), read in one place: every tool and test that
needs the book's pages in order asks here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The repository's root: the folder that holds ``_toc.yml``.
ROOT = Path(__file__).resolve().parents[1]


def pages(root: Path = ROOT) -> list[str]:
    """Every page of ``root/_toc.yml`` in reading order, as paths without suffix relative
    to ``root`` (``intro``, ``chapters/attention``, ``references``)."""
    import yaml

    path = root / "_toc.yml"
    try:
        toc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read the table of contents {path}: {error}") from error
    if not isinstance(toc, dict) or "root" not in toc:
        raise ValueError(f"{path} is not a Jupyter Book table of contents (no `root:`)")
    found = [str(toc["root"])]

    def walk(entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            if "file" in entry:
                found.append(str(entry["file"]))
            for key in ("chapters", "sections"):
                walk(entry.get(key, []))

    walk(toc.get("chapters", []))
    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return found


def chapters(root: Path = ROOT) -> list[str]:
    """The pages under ``chapters/`` (the executable ones), in reading order."""
    return [page for page in pages(root) if page.startswith("chapters/")]
