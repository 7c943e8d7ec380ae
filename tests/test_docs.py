"""The documentation's examples run as written, and its links lead somewhere.

The README is the getting-started page; the guides live in ``docs/``.  Their Python
examples run in order as one script (a later page uses what an earlier one defined), the
command-line walkthrough of ``docs/cli.md`` runs line by line, and every relative link of
the README and the guides points at a file, and a heading, that exists.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import ENV, PYTHON, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
CLI_PAGE = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
# the pages whose ```python blocks run, in this order, as one script
EXAMPLE_PAGES = ("README.md", "docs/guide.md", "docs/postgresql.md")
# the pages whose relative links must lead somewhere
LINKED_PAGES = (
    "README.md",
    "CHANGELOG.md",
    *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")),
)


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(encoding="utf-8"), re.DOTALL)


BLOCKS = [block for page in EXAMPLE_PAGES for block in python_blocks(page)]


def test_every_example_page_has_examples() -> None:
    for page in EXAMPLE_PAGES:
        assert python_blocks(page), page
    assert len(BLOCKS) >= 2


def test_no_page_has_examples_that_do_not_run() -> None:
    """A ```python block on a page outside EXAMPLE_PAGES would never be run."""
    with_examples = {page for page in LINKED_PAGES if python_blocks(page)}
    assert with_examples == set(EXAMPLE_PAGES)


def test_doc_python_blocks_run_in_order(tmp_path: Path, pg_url: str) -> None:
    script = "\n\n".join(BLOCKS)
    (tmp_path / "example.py").write_text(script, encoding="utf-8")
    env = {**ENV, "TASKMILL_DB": pg_url}  # "Scaling out" runs on a real PostgreSQL server
    proc = subprocess.run(
        [PYTHON, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    # the README's move: the delete waited for its copy; the batch ran to its end
    assert "blocked: 1" in proc.stdout and "move done: True 2 of 2" in proc.stdout
    # the README's first example: 3 rows, one key twice; both tasks ran
    assert "first example: {'submitted': 2, 'deduplicated': 1, 'superseded': 0" in proc.stdout
    assert "first example done: 2" in proc.stdout
    assert "TaskCompleted" in proc.stdout
    assert "'completed': 1" in proc.stdout
    # the scaling-out example submitted the plan to PostgreSQL: 3 new tasks, 1 in-batch dup
    assert "{'submitted': 3, 'deduplicated': 1, 'superseded': 0, 'upgraded': 0" in proc.stdout
    # controls: two tasks planned for later, one expired at once; the limited uploads ran
    assert "planned: 2" in proc.stdout
    assert "expired: 1" in proc.stdout and "limited: 20" in proc.stdout
    # history retention: nothing is 30 days old; then every finished task went to archive/
    assert "pruned 0; archive: None" in proc.stdout
    [archive] = (tmp_path / "archive").iterdir()
    assert archive.name.startswith("history-") and archive.suffix == ".parquet"
    # following a batch: four uploads, one failed; its bytes; the batch listed by name
    assert "batch done: True 3 1" in proc.stdout
    assert "bytes: 9000000 of 10000000" in proc.stdout
    assert "failed: ['c.jpg']" in proc.stdout
    assert "nightly eu" in proc.stdout
    # metrics: 5 uploads completed, 2 failed, the thumbnail waits in 'local'; the guide's
    # scheduler scraped itself over HTTP
    assert (
        "metrics: {'tasks_completed_total': 5.0, 'tasks_failed_total': 2.0, 'tasks_pending': 1.0}"
        in proc.stdout
    )
    assert "waiting in 'local': 1.0 True" in proc.stdout
    assert "['tasks_completed_total 3.0']" in proc.stdout
    # dependencies: the deletes were blocked on their copies, the manifest on both deletes
    assert (
        "[('a.jpg', 'pending', None), ('b.jpg', 'pending', None), "
        "('src/a.jpg', 'blocked', [1]), ('src/b.jpg', 'blocked', [2]), "
        "('manifest', 'blocked', [3, 4])]"
    ) in proc.stdout
    # stored progress: the last report, read while the task ran
    assert "progress: ('album/2026', 0.5, 'image 50 of 100')" in proc.stdout
    # preemption: the upload made room for the restore, then ran again (no try counted)
    assert "upload attempts: ['released', 'completed']" in proc.stdout
    # aging: two steps after 25 minutes, never past the floor
    assert "after 25 minutes, priority 200 acts as 168" in proc.stdout
    assert "after a day: 64 - and priority 10 stays 10" in proc.stdout
    # tags: the README's nightly plan selected and cancelled by its tags
    assert "monday: ['a.jpg', 'b.jpg']" in proc.stdout and "tuesday cancelled: 1" in proc.stdout
    # child tasks: the README's folder, and the guide's bucket with one upload failing
    assert "folder synced: 3 objects uploaded" in proc.stdout
    assert "folder task: completed children: 3 completed" in proc.stdout
    assert (
        "bucket: ('failed', 'child_failed: 1 of 4 child task(s) did not complete (1 failed)')"
    ) in proc.stdout
    assert "finalizer saw: {'completed': 3, 'failed': 1}" in proc.stdout
    # schedules: the README's ran a second apart; the guide's at given times was submitted
    # at noon, skipped while its task waited, and fired its latest missed occurrence alone
    assert "refreshed: True True" in proc.stdout
    assert "submitted sync@2026-01-15T12:00:00+00:00" in proc.stdout
    assert "['skipped', 'skipped']" in proc.stdout
    assert "submitted sync@2026-01-15T14:15:00+00:00" in proc.stdout
    order = proc.stdout.split("ran: ")[1].splitlines()[0]
    assert order.index("'a.jpg'") < order.index("'src/a.jpg'") < order.index("'manifest'")


@pytest.mark.parametrize("command", re.findall(r"^(python3 -m venv .*)$", README, re.M))
def test_quick_start_commands_use_a_venv(command: str) -> None:
    assert command.startswith('python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && ')


def walkthrough() -> list[str]:
    """The commands of the command-line walkthrough (docs/cli.md), comments dropped."""
    block = re.search(r"## A first session.*?```sh\n(.*?)```", CLI_PAGE, re.DOTALL)
    assert block
    return [ln.split("#")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]


def test_command_line_walkthrough_runs(tmp_path: Path) -> None:
    """The shell walkthrough of docs/cli.md, line by line, in an empty folder."""
    lines = walkthrough()
    env = ENV
    for line in lines:
        assert line.startswith("taskmill ")
        argv = [PYTHON, "-m", "taskmill", *line.split()[1:]]
        proc = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, (line, proc.stderr)
    assert (tmp_path / "outcome.parquet").exists() and (tmp_path / "failed.csv").exists()
    assert (tmp_path / "tasks.db").exists()  # the demo's default store


@pytest.mark.timeout(600)
def test_walkthrough_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    """0.1: the walkthrough submitted data/sample-plan.parquet, which exists only in a
    checkout.  Here: the built wheel in a fresh venv, run from a folder with nothing in it."""
    import os

    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    work.mkdir()
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(argv: list[str], cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, cwd=cwd, env=clean, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (argv, done.stderr[-3000:])
        return done

    run([PYTHON, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)])
    [wheel] = dist.glob("taskmill-*.whl")
    run([PYTHON, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)])
    where = run(
        [str(venv / "bin" / "python"), "-c", "import taskmill; print(taskmill.__file__)"], work
    )
    assert str(venv) in where.stdout  # the installed copy, not this checkout
    for line in walkthrough():
        run([str(venv / "bin" / "taskmill"), *line.split()[1:]], work)
    assert (work / "sample-plan.parquet").exists() and (work / "failed.csv").exists()
    assert (work / "tasks.db").exists()


# --------------------------------------------------------------------------- links

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def without_fences(text: str) -> str:
    """The page without its fenced blocks (a `# comment` in one is no heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped, spaces
    as hyphens, a repeated one suffixed -1, -2…"""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", without_fences(text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file, or whose heading, does not exist."""
    text = page.read_text(encoding="utf-8")
    broken = []
    prose = re.sub(r"`[^`]*`", "", without_fences(text))  # no links inside code spans
    for target in LINK.findall(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: …
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif (
            anchor
            and where.suffix == ".md"
            and anchor not in anchors(where.read_text(encoding="utf-8"))
        ):
            broken.append(f"{target}: no such heading")
    return broken


@pytest.mark.parametrize("page", LINKED_PAGES)
def test_relative_links_lead_somewhere(page: str) -> None:
    assert broken_links(ROOT / page) == []


def test_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Scaling out: one queue\n")
    page = tmp_path / "README.md"
    page.write_text(
        "# Top\n\n```sh\n# not a heading\n```\n\n"
        "[ok](docs/other.md) [ok](docs/other.md#scaling-out-one-queue) [ok](#top)\n"
        "[gone](docs/gone.md) [bad anchor](docs/other.md#scaling-out) [web](https://x.org/a)\n"
        "`[in code](nowhere.md)` [bad](#not-a-heading)\n"
    )
    assert broken_links(page) == [
        "docs/gone.md: no such file",
        "docs/other.md#scaling-out: no such heading",
        "#not-a-heading: no such heading",
    ]
