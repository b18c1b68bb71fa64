"""The report PDFs come from one headless Chromium per prediction run, driven over the DevTools pipe (issue #14)."""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import List

import pytest

from deepwml.inference.patient_report import find_pdf_converter
from deepwml.inference.pdf_printer import PdfPrinter
from deepwml.utils.errors import DeepWMLError
from test_patient_report import _predict, _write_case, model_dir  # noqa: F401 - model_dir is a fixture

needs_chromium = pytest.mark.skipif(find_pdf_converter() is None, reason="no chromium on PATH (apt-get install chromium)")


def _running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie waiting to be reaped has stopped running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _stops(pid: int, within: float = 10.0) -> bool:
    """True once ``pid`` has stopped running, waiting up to ``within`` s: a SIGKILL to a process group is delivered
    at once but a busy machine may take a moment to end a process that is not our child (CI saw one still running)."""
    deadline = time.monotonic() + within
    while _running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _page(folder: Path, name: str) -> Path:
    """A small HTML page titled after ``name`` (Chromium copies the title into the PDF's /Title)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.html"
    path.write_text(f"<!doctype html><html><head><title>page {name}</title></head><body><h1>{name}</h1></body></html>")
    return path


def _pdf_bytes(pdf: Path) -> bytes:
    """The bytes of ``pdf``, checked to start like a PDF."""
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF"), pdf
    return data


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Make tempfile put the browser profiles in a folder of the test's own, to see that none is left behind."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@needs_chromium
def test_a_run_of_three_cases_starts_chromium_once_and_prints_each_case(tmp_path, model_dir, monkeypatch, private_tmp):  # noqa: F811
    browser = find_pdf_converter()
    started: List[subprocess.Popen] = []
    real_popen = subprocess.Popen

    class Counting(real_popen):  # type: ignore[misc, valid-type]
        def __init__(self, args, *rest, **kwargs):
            super().__init__(args, *rest, **kwargs)
            if browser in [str(a) for a in args]:
                started.append(self)

    monkeypatch.setattr(subprocess, "Popen", Counting)
    for seed, name in enumerate(("a", "b", "c")):
        _write_case(tmp_path / "in", f"{name}.nii.gz", seed=seed + 1)
    out = tmp_path / "out"
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir, "--report", "pdf") == 0
    assert len(started) == 1  # one browser for the three PDFs (the one-shot way started one per case)
    for name in ("a", "b", "c"):
        pdf = _pdf_bytes(out / "report" / f"{name}.pdf")
        assert len(pdf) > 10_000 and f"/Title (DeepWML report: {name})".encode() in pdf
    # closed at the end of the run, its profile removed
    assert started[0].poll() is not None and list(private_tmp.iterdir()) == []
    assert sorted(p.name for p in (out / "report").iterdir()) == ["a.html", "a.pdf", "b.html", "b.pdf", "c.html", "c.pdf"]


@needs_chromium
def test_ctrl_c_during_a_run_closes_the_browser(tmp_path, model_dir, monkeypatch, private_tmp):  # noqa: F811
    printers: List[PdfPrinter] = []
    real_print = PdfPrinter.print_pdf

    def print_then_interrupt(self, html_path, pdf_path):
        printers.append(self)
        real_print(self, html_path, pdf_path)
        raise KeyboardInterrupt

    monkeypatch.setattr(PdfPrinter, "print_pdf", print_then_interrupt)
    _write_case(tmp_path / "in", "a.nii.gz", seed=1)
    pids = []
    real_start = PdfPrinter._start

    def start(self, pdf_path):
        real_start(self, pdf_path)
        pids.append(self.pid)

    monkeypatch.setattr(PdfPrinter, "_start", start)
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "--report", "pdf") != 0
    assert len(pids) == 1 and not _running(pids[0]) and printers[0].pid is None
    assert list(private_tmp.iterdir()) == []


@needs_chromium
def test_a_browser_killed_between_two_prints_is_replaced_by_a_fresh_one(tmp_path, private_tmp):
    pages = tmp_path / "pages"
    with PdfPrinter(find_pdf_converter(), timeout=60) as printer:
        printer.print_pdf(_page(pages, "one"), pages / "one.pdf")
        first = printer.pid
        os.kill(first, signal.SIGKILL)
        printer.print_pdf(_page(pages, "two"), pages / "two.pdf")
        assert printer.launches == 2 and printer.pid != first
        assert b"/Title (page two)" in _pdf_bytes(pages / "two.pdf")
        second = printer.pid
    assert not _running(first) and not _running(second) and printer.pid is None
    assert b"/Title (page one)" in _pdf_bytes(pages / "one.pdf")
    assert list(private_tmp.iterdir()) == []


def test_a_browser_that_never_answers_fails_the_pdf_within_the_timeout_and_leaves_nothing(tmp_path, private_tmp):
    pages = tmp_path / "pages"
    html = _page(pages, "one")
    children = tmp_path / "child.pid"
    fake = tmp_path / "chromium"
    # starts, ignores its pipes, and has a child of its own (which must go too)
    fake.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {children}\nwait\n")
    fake.chmod(0o755)
    start = time.monotonic()
    with PdfPrinter(str(fake), timeout=1.5) as printer:
        with pytest.raises(DeepWMLError) as failure:
            printer.print_pdf(html, pages / "one.pdf")
        assert printer.pid is None
    assert time.monotonic() - start < 10
    assert failure.value.path == str(pages / "one.pdf") and "did not print one.html within 1.5 s" in str(failure.value)
    assert sorted(p.name for p in pages.iterdir()) == ["one.html"]  # no PDF, no temporary
    assert list(private_tmp.iterdir()) == []
    assert _stops(int(children.read_text()))


def test_a_browser_that_cannot_start_or_exits_at_once_is_an_error_naming_the_pdf(tmp_path, private_tmp):
    pages = tmp_path / "pages"
    html = _page(pages, "one")
    with PdfPrinter(str(tmp_path / "no-such-chromium"), timeout=10) as printer:
        with pytest.raises(DeepWMLError, match=r"closed its pipe while printing one.html \(exit status 127\).*not found") as failure:
            printer.print_pdf(html, pages / "one.pdf")
    assert failure.value.path == str(pages / "one.pdf")
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    broken.chmod(0o755)
    with PdfPrinter(str(broken), timeout=10) as printer:
        with pytest.raises(DeepWMLError, match=r"closed its pipe while printing one.html \(exit status 3\); its last message: cannot open display$") as failure:
            printer.print_pdf(html, pages / "one.pdf")
        assert printer.launches == 1  # a browser that fails at its own start is not retried
    assert failure.value.path == str(pages / "one.pdf")
    assert sorted(p.name for p in pages.iterdir()) == ["one.html"] and list(private_tmp.iterdir()) == []


@needs_chromium
def test_two_threads_printing_at_once_each_get_their_own_page(tmp_path):
    pages = tmp_path / "pages"
    names = ["left", "right"]
    barrier = threading.Barrier(len(names))
    errors: List[BaseException] = []
    with PdfPrinter(find_pdf_converter(), timeout=60) as printer:

        def work(name: str) -> None:
            try:
                html = _page(pages, name)
                for round_ in range(2):
                    barrier.wait()
                    printer.print_pdf(html, pages / f"{name}{round_}.pdf")
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == [] and printer.launches == 1
    for name in names:
        for round_ in range(2):
            assert f"/Title (page {name})".encode() in _pdf_bytes(pages / f"{name}{round_}.pdf")


@needs_chromium
def test_pages_share_one_tab_and_a_page_that_cannot_open_does_not_spoil_the_next(tmp_path, private_tmp):
    """Every page is printed in the browser's one tab; a missing page is an error naming its PDF, and the next page
    (in a fresh tab) still prints its own content, not the previous page's."""
    pages = tmp_path / "pages"
    first, second = _page(pages, "first"), _page(pages, "second")
    with PdfPrinter(find_pdf_converter(), timeout=60) as printer:
        printer.print_pdf(first, pages / "first.pdf")
        tab = printer._browser.tab
        printer.print_pdf(second, pages / "second.pdf")
        assert tab is not None and printer._browser.tab == tab  # the same tab served both
        with pytest.raises(DeepWMLError) as failure:
            printer.print_pdf(pages / "missing.html", pages / "missing.pdf")
        assert failure.value.path == str(pages / "missing.pdf") and not (pages / "missing.pdf").exists()
        printer.print_pdf(first, pages / "again.pdf")
        assert printer.launches == 1
    assert b"/Title (page second)" in _pdf_bytes(pages / "second.pdf") and b"/Title (page first)" in _pdf_bytes(pages / "again.pdf")
