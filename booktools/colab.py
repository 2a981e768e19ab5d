"""Sphinx extension: an "Open in Colab" entry in each chapter's launch menu.

Colab opens notebooks (``.ipynb``) from a GitHub path, not the book's MyST Markdown, so
the theme's own Colab button (which links the page's ``.md`` on the book's branch) does
not work for this book. CI publishes each executed chapter as a notebook on the branch
named by ``d2l_colab_branch`` (``booktools/colab_notebooks.py``); the entry added here opens
``<that branch>/<page>.ipynb``. It goes in the menu the theme builds for notebook pages
(after its Binder entry), so pages without a kernel get none.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sphinx.application import Sphinx

COLAB = "https://colab.research.google.com"


def colab_url(repository_url: str, branch: str, pagename: str) -> str:
    """Where Colab opens ``pagename``'s notebook on ``branch`` of a GitHub repository."""
    url = urlsplit(repository_url)
    if url.netloc != "github.com":
        raise ValueError(f"Colab opens notebooks from GitHub only, not {repository_url}")
    org, repo = url.path.strip("/").split("/")[:2]
    return f"{COLAB}/github/{org}/{repo.removesuffix('.git')}/blob/{branch}/{pagename}.ipynb"


def _add_colab(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any],
               doctree: Any) -> None:  # fmt: skip
    groups = [b for b in context.get("header_buttons", [])
              if b.get("label") == "launch-buttons"]  # fmt: skip
    if not groups:  # not a notebook page
        return
    options = app.config["html_theme_options"]
    entry = {
        "type": "link",
        "text": "Colab",
        "tooltip": "Open this page as a notebook in Colab",
        "icon": "_static/images/logo_colab.png",
        "url": colab_url(options["repository_url"], app.config.d2l_colab_branch, pagename),
    }
    buttons = groups[0]["buttons"]
    binder = [i for i, b in enumerate(buttons) if b.get("text") == "Binder"]
    buttons.insert(binder[0] + 1 if binder else len(buttons), entry)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("d2l_colab_branch", "colab", "html")
    # After the theme's launch buttons (priority 501) have been built.
    app.connect("html-page-context", _add_colab, priority=510)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
