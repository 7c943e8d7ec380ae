"""Regenerate the CLI reference in README.md from ``--help``.

``python -m taskmill.cli_reference [README.md]`` rewrites the text between the
``<!-- cli-reference:start -->`` and ``<!-- cli-reference:end -->`` markers;
a test fails when the README and ``--help`` drift apart.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .cli import reference

START, END = "<!-- cli-reference:start -->\n", "<!-- cli-reference:end -->"


def update(readme: Path) -> bool:
    """Rewrite the reference in ``readme``; returns whether it changed."""
    text = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{readme} has no {START.strip()} … {END} markers")
    new = pattern.sub(lambda _: START + reference() + END, text)
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    print(f"{path}: {'updated' if update(path) else 'already current'}")
