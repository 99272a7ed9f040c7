"""MkDocs hook (mkdocs.yml: ``hooks``): the README is the site's home page.

The README lives at the repository root, outside ``docs/``, and links to the pages as ``docs/<page>.md`` so that
its links work on GitHub; in the site it becomes ``index.md`` beside those pages, its links ``<page>.md``.
"""

import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

README = Path(__file__).parent / "README.md"


def on_files(files: Files, config) -> Files:
    if files.get_file_from_path("index.md") is not None:
        raise PluginError("docs/index.md exists, but the README is the site's home page (mkdocs_hooks.py): remove it")
    text = re.sub(r"\]\(docs/", "](", README.read_text(encoding="utf-8"))
    files.append(File.generated(config, "index.md", content=text))
    return files
