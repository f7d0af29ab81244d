"""Generated blocks inside hand-written Markdown: the text between
``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` is replaced by a report script, so a
document's prose stays hand-written while every number in it is regenerated."""
from __future__ import annotations

import os
import re

from simformer.utils.io import atomic_write_text


def replace_block(path: str, name: str, text: str) -> None:
    """Replace block ``name`` of ``path`` with ``text`` (appended at the end if the file has none)."""
    start, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
    body = f"{start}\n{text.rstrip()}\n{end}"
    doc = open(path).read() if os.path.isfile(path) else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: body, doc)
    else:
        doc = doc.rstrip() + ("\n\n" if doc else "") + body + "\n"
    atomic_write_text(path, doc)
