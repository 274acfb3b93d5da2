"""A MkDocs hook: a list that starts right after a paragraph line is read as a list.

GitHub's Markdown starts a list on the line after a paragraph; Python-Markdown needs a blank line first. The tiny-cells
model card (``src/napari_sam/models/tiny-cells/README.md``), written for GitHub and included into the site by
pymdownx.snippets, has such lists. This hook adds a Markdown preprocessor that runs after the snippets are included
and puts a blank line between a paragraph line and a list item that follows it, outside fenced code.
"""

from __future__ import annotations

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor

ITEM = re.compile(r"^(?:[-*+]|\d+\.)\s")
FENCE = re.compile(r"^\s*(```|~~~)")


class ListSpacing(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        spaced: list[str] = []
        fenced = False
        for line in lines:
            if FENCE.match(line):
                fenced = not fenced
            elif not fenced and ITEM.match(line) and spaced:
                previous = spaced[-1]
                if previous.strip() and not previous.startswith((" ", "\t", "|", "#", ">")) \
                        and not ITEM.match(previous):
                    spaced.append("")
            spaced.append(line)
        return spaced


class ListSpacingExtension(Extension):
    def extendMarkdown(self, md) -> None:  # noqa: N802 - Python-Markdown's name
        md.preprocessors.register(ListSpacing(md), "napari_sam_list_spacing", 25)  # after snippets (32)


def on_config(config, **kwargs):
    config.markdown_extensions.append(ListSpacingExtension())
    return config
