"""The replay page (``replay --export html``), opened in a real browser: Debian's chromium,
driven by Playwright. Nothing may leave the machine."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim._replay import LoadedRun, lines_of, load_run

from .conftest import finished, sim


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    reason = "no chromium on PATH (.ci/run installs Debian's chromium)"
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    executable = _chromium()
    with sync_playwright() as p:
        # The system's chromium: nothing is downloaded. No sandbox: CI runs as root.
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def export(loaded: LoadedRun, path: Path) -> None:
    result = sim("replay", str(loaded.run_dir), "--export", "html", str(path))
    assert result.returncode == 0, result.stderr
    assert f"html: {path}" in result.stderr


def open_page(browser: Any, path: Path) -> tuple[Any, list[str], list[str]]:
    """The page at ``path``, every request it made, and its script errors."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    def only_the_file(route: Any) -> None:
        if route.request.url == path.as_uri():
            route.continue_()
        else:
            route.abort()  # anything else would have left the machine (or the file)

    page.route("**/*", only_the_file)
    page.goto(path.as_uri())
    return page, requests, errors


def position(page: Any) -> int:
    return int(page.get_attribute("body", "data-position"))


@pytest.mark.timeout(180)
def test_the_page_steps_to_the_deadlock_and_explains_it_offline(
    tmp_path: Path, browser: Any
) -> None:
    result = finished(tmp_path / "logs", "philosophers-naive", "clock.mode=virtual",
                      args=("--quiet", "--seed", "3"))  # fmt: skip
    assert result.code == 0, result.stderr
    loaded = load_run(result.run_dir)
    deadlock = next(line for line in lines_of(loaded) if line.event == "deadlock")
    explanation = str(deadlock["explanation"])
    # Steps of a virtual run are its scheduling steps: the deadlock's is its position.
    steps = sorted({line.step for line in lines_of(loaded)})
    at = steps.index(deadlock.step) + 1
    html_path = tmp_path / "page.html"
    export(loaded, html_path)
    text = html_path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing to fetch

    page, requests, errors = open_page(browser, html_path)
    assert page.title().startswith("Dining philosophers")
    assert page.inner_text("#findings").strip() == "nothing yet"
    assert page.is_hidden("#summary")
    # Step by step to the deadlock: the explanation appears exactly there.
    for k in range(1, at + 1):
        page.click("#forward")
        assert position(page) == k
        if k < at:
            assert explanation not in page.inner_text("#findings")
    findings = " ".join(page.inner_text("#findings").split())
    assert explanation in findings
    assert f"step {at}" in findings.lower()
    lanes = page.inner_text("#lanes")
    for wait in deadlock["waits"]:
        assert wait["actor"] in lanes
    assert all(page.inner_text(f'.lane[data-actor="{w["actor"]}"] .pill') == "waiting"
               for w in deadlock["waits"])  # fmt: skip
    assert "5 blocked" in page.inner_text("#counts")
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'page.png'}")
    # Back one step: not yet found; the next-finding key goes straight to it.
    page.click("#back")
    assert explanation not in page.inner_text("#findings")
    page.click("#start")
    page.keyboard.press("n")
    assert position(page) == at
    # An operation clicked in this step: its fields and its wait.
    page.click("#step li.op")
    detail = page.inner_text("#detail")
    assert "acquire" in detail
    assert "never returned" in detail  # a deadlocked acquire
    # The slider seeks; the summary waits for the end.
    page.eval_on_selector("#seek", "s => { s.value = 3; s.dispatchEvent(new Event('input')); }")
    assert position(page) == 3
    assert page.is_hidden("#summary")
    page.click("#end")
    assert page.is_visible("#summary")
    assert "no deadlock" in page.inner_text("#summary")
    assert errors == []
    assert requests == [html_path.as_uri()]
    page.close()


@pytest.mark.timeout(180)
def test_the_page_shows_every_gauge_and_a_wall_run_plays_by_time(
    tmp_path: Path, browser: Any
) -> None:
    result = finished(tmp_path / "logs", "bounded_buffer-if", args=("--quiet", "--seed", "2"))
    assert result.code == 0, result.stderr
    loaded = load_run(result.run_dir)
    html_path = tmp_path / "buffer.html"
    export(loaded, html_path)
    page, requests, errors = open_page(browser, html_path)
    names = page.eval_on_selector_all("#gauges .name", "els => els.map(e => e.textContent)")
    from sim.views.tape import record

    assert names == record(loaded).row_names
    assert {"cond", "count"} <= set(names)  # the Condition and the shared count it guards
    assert position(page) == 0
    page.click("#play")
    # Not "pause" at once: on a loaded machine the playback may reach the finding (and stop)
    # before the label is read (CI saw "▶ play" there). It is seen to move and then to stop.
    for _ in range(600):  # until it stops by itself (the page's CSP forbids a string predicate)
        if position(page) > 0 and "play" in page.inner_text("#play"):
            break
        page.wait_for_timeout(100)
    assert "play" in page.inner_text("#play")
    # Playing stops at the first finding: the underflow, explained.
    findings = page.inner_text("#findings")
    assert "underflow" in findings
    assert position(page) > 0
    assert errors == []
    assert requests == [html_path.as_uri()]
    page.close()
