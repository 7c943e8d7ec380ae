"""``taskmill ui``'s application over a real store, served by uvicorn on loopback and
asked over HTTP: what each page says, the token, the session, CSRF, read-only, the
actions' effects in the store, and hostile names shown as text."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from dashboard import (
    HOSTILE_BATCH,
    HOSTILE_ERROR,
    HOSTILE_GROUP,
    HOSTILE_KEY,
    HOSTILE_SCHEDULE,
    HOSTILE_TAG,
    HOSTILE_TYPE,
    csrf_of,
    fill,
    served,
)
from markupsafe import escape

import taskmill as tm
from taskmill.web import is_loopback
from taskmill.web.serve import serve

pytestmark = pytest.mark.backends("sqlite", "postgres")


def esc(text: str) -> str:
    """``text`` as the pages write it (Jinja's escaping)."""
    return str(escape(text))


def _ids(page: str) -> list[int]:
    """The task ids a tasks page lists, in its order."""
    return [int(m) for m in re.findall(r'<td class="n"><a href="/tasks/(\d+)">', page)]


def test_every_page_shows_the_store_with_hostile_names_as_text(store: tm.TaskStore) -> None:
    filled = fill(store)
    with served(store) as url, httpx.Client(base_url=url) as web:
        pages = {
            "/": web.get("/"),
            "/tasks": web.get("/tasks"),
            f"/tasks/{filled.hostile}": web.get(f"/tasks/{filled.hostile}"),
            f"/tasks/{filled.failed}": web.get(f"/tasks/{filled.failed}"),
            "/batches": web.get("/batches"),
            f"/batches/{filled.batch_id}": web.get(f"/batches/{filled.batch_id}"),
            "/schedules": web.get("/schedules"),
            "/workers": web.get("/workers"),
            "pause-group": web.get("/actions/pause-group", params={"group": HOSTILE_GROUP}),
            "pause-schedule": web.get(
                "/actions/pause-schedule", params={"schedule": HOSTILE_SCHEDULE}
            ),
            "tasks?group=": web.get("/tasks", params={"group": HOSTILE_GROUP}),
        }
    for path, answer in pages.items():
        assert answer.status_code == 200, path
        text = answer.text
        for raw in (HOSTILE_GROUP, HOSTILE_KEY, HOSTILE_ERROR, HOSTILE_SCHEDULE, HOSTILE_TYPE):
            assert raw not in text, (path, raw)
        assert "<script>alert" not in text and "<img src=x" not in text, path
        assert answer.headers["content-security-policy"].startswith("default-src 'none'")
        assert answer.headers["x-content-type-options"] == "nosniff"
    queue = pages["/"].text
    assert esc(HOSTILE_GROUP) in queue and esc(HOSTILE_TYPE) in queue
    # the counts by status, what the paused group waits on, the parent waiting
    assert re.search(r"<span>pending</span> <b>8</b>", queue)
    assert re.search(r"<span>completed</span> <b>3</b>", queue)
    assert re.search(r"<span>waiting</span> <b>1</b>", queue)
    assert "dependencies (1 blocked)" in queue and 'class="waits">paused</td>' in queue
    assert "child tasks (1 parent waiting)" in queue
    assert "3 tasks" in queue or "4 tasks" in queue  # ended this half hour (3 + 1 failed)
    hostile = pages[f"/tasks/{filled.hostile}"].text
    assert esc(HOSTILE_KEY) in hostile
    assert esc(f"{HOSTILE_TAG[0]}={HOSTILE_TAG[1]}") in hostile
    assert esc('"note": "<script>alert(\'payload\')</script>"') in hostile
    failed = pages[f"/tasks/{filled.failed}"].text
    assert esc(HOSTILE_ERROR) in failed and "traceback" in failed
    assert "/actions/retry-task?task=" in failed
    assert esc(HOSTILE_BATCH) in pages["/batches"].text
    assert esc(HOSTILE_SCHEDULE) in pages["/schedules"].text
    assert f"Pause group “{esc(HOSTILE_GROUP)}”?" in pages["pause-group"].text
    assert f'name="group" value="{esc(HOSTILE_GROUP)}"' in pages["pause-group"].text
    assert f"Pause schedule “{esc(HOSTILE_SCHEDULE)}”?" in pages["pause-schedule"].text
    assert f'name="group" value="{esc(HOSTILE_GROUP)}"' in pages["tasks?group="].text
    assert _ids(pages["tasks?group="].text) == [filled.hostile]


def test_a_task_shows_its_attempts_dependencies_and_children(store: tm.TaskStore) -> None:
    filled = fill(store)
    with served(store) as url, httpx.Client(base_url=url) as web:
        parent = web.get(f"/tasks/{filled.parent}").text
        blocked = web.get(f"/tasks/{filled.blocked}").text
        done = web.get(f"/tasks/{filled.completed[0]}").text
        kids = web.get("/tasks", params={"parent": filled.parent}).text
    assert "Child tasks <small>2: 2 pending</small>" in parent
    assert all(f'href="/tasks/{c}"' in parent for c in filled.children)
    assert ">waiting<" in parent and ">waiting</span></td>" in parent  # its attempt's outcome
    assert "Waits for <small>1 task; if one fails: cancel</small>" in blocked
    assert f'<a href="/tasks/{filled.blocked - 4}">' in blocked  # gcs://us/old/0
    assert re.search(r"<td class=\"n\">1</td><td><span class=\"status st-completed\">", done)
    assert esc('"bytes": 0') in done and esc('"src": "s3://eu/photos/000.jpg"') in done
    assert _ids(kids) == sorted(filled.children, reverse=True)


def test_tasks_are_paged_newest_first_each_once_and_filtered(store: tm.TaskStore) -> None:
    store.submit_batch(
        [tm.TaskSubmission("copy", dedup_key=f"a/{i:03d}", group=f"g{i % 3}") for i in range(120)]
    )
    owner = store.new_owner()
    done = [t.id for t in store.claim(30, task_types=["copy"], owner=owner)]
    store.complete_many(done, owner=owner)
    seen: list[int] = []
    with served(store) as url, httpx.Client(base_url=url) as web:
        path: str | None = "/tasks"
        while path is not None:
            page = web.get(path).text
            seen += _ids(page)
            older = re.search(r'<a href="(/tasks\?[^"]+)" rel="next">', page)
            path = html.unescape(older.group(1)) if older else None
        assert seen == list(range(120, 0, -1))
        assert (
            _ids(web.get("/tasks", params={"status": "completed"}).text) == sorted(done)[::-1][:50]
        )
        in_g1 = _ids(web.get("/tasks", params={"group": "g1", "key": "a/00"}).text)
        assert in_g1 == [8, 5, 2]  # keys a/001, a/004, a/007 in group g1
        bad = web.get("/tasks", params={"status": "nope", "batch": "x"})
    assert bad.status_code == 400
    assert "status “nope” is not one of" in bad.text
    assert "batch must be a whole number from 1, not “x”" in bad.text


def test_actions_confirm_then_change_the_store(store: tm.TaskStore) -> None:
    filled = fill(store)
    pending = store.tasks(status="pending", task_type="copy")["id"].to_list()[0]
    with served(store) as url, httpx.Client(base_url=url) as web:
        # a GET only asks: nothing changes
        ask = web.get("/actions/cancel-task", params={"task": pending, "next": "/tasks"})
        assert ask.status_code == 200 and f"Cancel task {pending}?" in ask.text
        assert store.task(pending)["status"] == "pending"
        token = csrf_of(ask.text)

        def act(name: str, **fields: object) -> httpx.Response:
            return web.post(f"/actions/{name}", data={"csrf": token, **fields})

        done = act("cancel-task", task=pending, next="/tasks")
        assert done.status_code == 303 and done.headers["location"] == "/tasks"
        assert store.task(pending)["status"] == "cancelled"
        assert f"Task {pending} cancelled." in web.get("/tasks").text  # said once
        assert f"Task {pending} cancelled." not in web.get("/tasks").text

        act("pause-group", group=HOSTILE_GROUP, next="/")
        assert HOSTILE_GROUP in store.paused_groups()
        act("resume-group", group=HOSTILE_GROUP, next="/")
        assert HOSTILE_GROUP not in store.paused_groups()
        act("resume-group", group="gcs://us")
        assert store.paused_groups() == {}

        act("pause-schedule", schedule=HOSTILE_SCHEDULE)
        assert store.schedules()["paused"].to_list() == [True]
        act("resume-schedule", schedule=HOSTILE_SCHEDULE)
        assert store.schedules()["paused"].to_list() == [False]

        other = store.tasks(status="pending", task_type="copy")["id"].to_list()[0]
        act("pause-task", task=other)
        assert store.task(other)["status"] == "paused"
        act("resume-task", task=other)
        assert store.task(other)["status"] == "pending"

        retried = act("retry-task", task=filled.failed, next="/tasks")
        assert retried.status_code == 303
        again = store.tasks(task_type="copy", status="pending")
        key = store.task(filled.failed)["dedup_key"]
        assert again.filter(again["dedup_key"] == key).height == 1
        said = web.get("/tasks").text
        assert re.search(rf"Task {filled.failed} retried: task \d+ \(submitted\)\.", said)
        # a second retry of the same failure submits nothing more
        act("retry-task", task=filled.failed)
        assert "(deduplicated)" in web.get("/").text
        # an unsafe next is not followed
        away = act("cancel-task", task=filled.hostile, next="//evil.example/x")
        assert away.headers["location"] == "/"


def test_a_form_without_the_session_token_or_from_elsewhere_changes_nothing(
    store: tm.TaskStore,
) -> None:
    fill(store)
    victim = store.tasks(status="pending")["id"].to_list()[0]
    with served(store) as url, httpx.Client(base_url=url) as web:
        token = csrf_of(web.get("/actions/cancel-task", params={"task": victim}).text)
        for data, headers in (
            ({"task": victim}, {}),  # no token
            ({"task": victim, "csrf": "guessed"}, {}),  # a wrong one
            ({"task": victim, "csrf": token}, {"origin": "http://evil.example"}),
            ({"task": victim, "csrf": token}, {"sec-fetch-site": "cross-site"}),
        ):
            refused = web.post("/actions/cancel-task", data=data, headers=headers)
            assert refused.status_code == 403
            assert "nothing was changed" in refused.text
        # another session (another browser) cannot use this one's token
        with httpx.Client(base_url=url) as stranger:
            stranger.get("/")
            assert (
                stranger.post(
                    "/actions/cancel-task", data={"task": victim, "csrf": token}
                ).status_code
                == 403
            )
        assert web.get(f"/actions/cancel-task?task={victim}").status_code == 200
    assert store.task(victim)["status"] == "pending"


def test_read_only_offers_no_action_and_refuses_every_post(store: tm.TaskStore) -> None:
    filled = fill(store)
    victim = store.tasks(status="pending")["id"].to_list()[0]
    with served(store, read_only=True) as url, httpx.Client(base_url=url) as web:
        for path in ("/", f"/tasks/{victim}", f"/tasks/{filled.failed}", "/schedules"):
            page = web.get(path).text
            assert "/actions/" not in page and "read-only" in page
        ask = web.get("/actions/cancel-task", params={"task": victim})
        assert ask.status_code == 403 and "<form" not in ask.text
        token = (
            csrf_of(web.get("/actions/cancel-task", params={"task": victim}).text)
            if ("csrf" in ask.text)
            else "x"
        )
        refused = web.post("/actions/cancel-task", data={"task": victim, "csrf": token})
        assert refused.status_code == 403 and "read-only" in refused.text
    assert store.task(victim)["status"] == "pending"


def test_a_token_guards_every_request(store: tm.TaskStore) -> None:
    fill(store)
    secret = "s3cr&t/token"
    with served(store, token=secret) as url:
        with httpx.Client(base_url=url) as web:
            for path in ("/", "/tasks", "/static/htmx.min.js", "/actions/cancel-task?task=1"):
                denied = web.get(path)
                assert denied.status_code == 401, path
                assert denied.headers["www-authenticate"].startswith("Bearer")
            assert web.get("/", params={"token": "wrong"}).status_code == 401
            assert web.get("/", headers={"authorization": "Bearer wrong"}).status_code == 401
            assert web.get("/", headers={"authorization": f"Bearer {secret}"}).status_code == 200
            assert web.get("/").status_code == 401  # the header signs nothing in
            # ?token= once: signed in, and sent to the same page without it
            signed = web.get("/tasks", params={"token": secret, "status": "pending"})
            assert signed.status_code == 303
            assert signed.headers["location"] == "/tasks?status=pending"
            cookie = signed.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            assert web.get("/tasks", params={"status": "pending"}).status_code == 200
            assert web.get("/static/taskmill.css").status_code == 200
        with httpx.Client(base_url=url) as stranger:
            assert stranger.get("/tasks").status_code == 401


def test_listening_beyond_loopback_needs_a_token(store: tm.TaskStore) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert not is_loopback("example.com")
    with pytest.raises(tm.SchedulerError, match="beyond this machine, with no token"):
        serve(store, host="0.0.0.0", port=0)


def test_unknown_tasks_and_batches_are_said_plainly(store: tm.TaskStore) -> None:
    with served(store) as url, httpx.Client(base_url=url) as web:
        missing = web.get("/tasks/999")
        assert missing.status_code == 404 and "No task 999 in this store" in missing.text
        for path in ("/tasks/abc", "/tasks/1.5", "/tasks/99999999999999999999999", "/tasks/0"):
            odd = web.get(path)
            assert odd.status_code == 404, path
            assert "A task id is a whole number from 1." in odd.text and "int()" not in odd.text
        assert web.get("/batches/77").status_code == 404
        assert "A batch id is a whole number from 1." in web.get("/batches/x%00y").text
        assert web.get("/actions/drop-table").status_code == 404
        empty = web.get("/").text
        assert "No active task, and none ended in the last hour." in empty


async def test_the_queue_page_says_what_held_each_group_at_a_workers_claim(
    store: tm.TaskStore,
) -> None:
    import asyncio

    gate = asyncio.Event()

    async def wait(ctx: tm.TaskContext) -> None:
        await gate.wait()

    store.submit_batch(
        [tm.TaskSubmission("t", group=HOSTILE_GROUP, dedup_key=f"g{i}") for i in range(3)]
        + [tm.TaskSubmission("u", dedup_key=f"u{i}") for i in range(2)]
    )
    with served(store) as url:
        async with tm.Scheduler(
            store,
            executors={"t": wait, "u": wait},
            group_concurrency={HOSTILE_GROUP: 1},
            rate_limits={"type:u": tm.RateLimit(0.5)},
            poll_interval=0.05,
        ):
            for _ in range(300):
                if len(store.held_groups()) == 2:
                    break
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=url) as web:
                page = (await web.get("/")).text
            gate.set()
    row = re.search(rf"<tr>\s*<td><a [^>]*>{re.escape(esc(HOSTILE_GROUP))}</a>.*?</tr>", page, re.S)
    assert row and '<td class="waits">group limit</td>' in row.group(0)
    types = re.search(r"<tr>\s*<td><a [^>]*>u</a>.*?</tr>", page, re.S)
    assert types and '<td class="waits">rate limit</td>' in types.group(0)


def test_bad_filters_name_the_field_and_repeat_little(store: tm.TaskStore) -> None:
    fill(store)
    with served(store) as url, httpx.Client(base_url=url) as web:
        for params, said in (
            ({"batch": "99999999999999999999999"}, "batch must be a whole number from 1, not"),
            ({"batch": "-1"}, "batch must be a whole number from 1, not “-1”"),
            ({"before": "١"}, "before must be a whole number from 1, not “١”"),
            ({"parent": "+1"}, "parent must be a whole number from 1, not “+1”"),
            ({"key": "a\x00b"}, "key prefix must not hold a NUL character"),
            ({"group": "a\x00b"}, "group must not hold a NUL character"),
            ({"tag": "a\x00=b"}, "tag must not hold a NUL character"),
        ):
            answer = web.get("/tasks", params=params)
            assert answer.status_code == 400, params
            assert said in answer.text, (params, answer.text[-2000:])
            assert "batch_id" not in answer.text and "key_prefix" not in answer.text
        long = web.get("/tasks", params={"before": "9" * 30_000})
        assert long.status_code == 400 and len(long.text) < 20_000


def test_a_request_naming_another_host_is_refused_without_a_token(store: tm.TaskStore) -> None:
    """DNS rebinding: a page of another site whose name points at 127.0.0.1 reaches
    nothing — neither a page nor an action (the Host header names that site)."""
    victim = fill(store).hostile
    with served(store) as url, httpx.Client(base_url=url) as web:
        evil = {"host": "evil.example:8765"}
        assert web.get("/", headers=evil).status_code == 400
        assert (
            web.get("/actions/cancel-task", params={"task": victim}, headers=evil).status_code
            == 400
        )
        assert (
            web.post("/actions/cancel-task", data={"task": victim}, headers=evil).status_code == 400
        )
        for name in ("localhost", "127.0.0.1"):
            port = url.rsplit(":", 1)[1]
            assert web.get("/", headers={"host": f"{name}:{port}"}).status_code == 200
        token = csrf_of(web.get("/actions/cancel-task", params={"task": victim}).text)
        null = web.post(
            "/actions/cancel-task", data={"task": victim, "csrf": token}, headers={"origin": "null"}
        )
        assert null.status_code == 403 and "sent from another site" in null.text
    assert store.task(victim)["status"] == "pending"
    with served(store, token="t") as url, httpx.Client(base_url=url) as web:
        named = web.get("/", headers={"host": "dashboard.example", "authorization": "Bearer t"})
        assert named.status_code == 200  # behind a token, any name may reach it


def test_a_confirmation_needs_what_it_acts_on(store: tm.TaskStore) -> None:
    with served(store) as url, httpx.Client(base_url=url) as web:
        answer = web.get("/actions/pause-group")
        assert answer.status_code == 400 and "Which group?" in answer.text
        assert "<form" not in answer.text


def test_refresh_and_token_are_checked(store: tm.TaskStore) -> None:
    from taskmill.web import create_app

    for refresh in (float("nan"), float("inf"), -1):
        with pytest.raises(tm.SchedulerError, match="refresh must be a number of seconds"):
            create_app(store, refresh=refresh)
    with pytest.raises(tm.SchedulerError, match="a token must not be blank"):
        create_app(store, token="  ")
