"""Regenerate the CLI reference in docs/cli.md from ``--help``.

``python -m taskmill.cli_reference [docs/cli.md]`` rewrites the text between the
``<!-- cli-reference:start -->`` and ``<!-- cli-reference:end -->`` markers;
a test fails when the page and ``--help`` drift apart.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .cli import reference

START, END = "<!-- cli-reference:start -->\n", "<!-- cli-reference:end -->"


def update(page: Path) -> bool:
    """Rewrite the reference in ``page``; returns whether it changed."""
    text = page.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{page} has no {START.strip()} … {END} markers")
    new = pattern.sub(lambda _: START + reference() + END, text)
    if new != text:
        page.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/cli.md")
    print(f"{path}: {'updated' if update(path) else 'already current'}")
