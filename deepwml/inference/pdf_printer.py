"""Report pages printed to PDF by one headless Chromium per prediction run, driven over the DevTools protocol on pipes.

A one-shot ``chromium --print-to-pdf`` spends most of its ~2 s starting the browser; a browser kept open prints each
further page in a fraction of a second. Started with ``--remote-debugging-pipe``, Chromium reads protocol commands
on its fd 3 and writes replies and events on its fd 4, each message a JSON object ended by a NUL byte. It exits by
itself when fd 3 is closed, so a killed prediction run leaves no browser behind.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Dict, List, Optional, Tuple, Type

from deepwml.utils.atomic import write_bytes
from deepwml.utils.errors import DeepWMLError

#: sh moves the pipe ends it got as stdin and stdout to fds 3 and 4, then becomes the browser (same pid); the
#: pipes come in as stdin/stdout because dash's redirections take single-digit fds only
_ON_FDS_3_AND_4 = 'exec "$@" 3<&0 4>&1 </dev/null >&2'
#: Page.printToPDF settings: the page's own colours and @page size, no browser header or footer
PRINT_SETTINGS = {"printBackground": True, "displayHeaderFooter": False, "preferCSSPageSize": True}
#: seconds a closing browser gets to exit by itself before it is killed
CLOSE_GRACE = 5.0


class _Gone(Exception):
    """The browser closed its pipe or sent something that is not a protocol message."""


class _PageError(Exception):
    """The browser is fine but could not open or print this page."""


def headless_command(browser: str, profile: str) -> List[str]:
    """A headless Chromium command line with a throwaway profile and no network chatter."""
    return [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
    ]  # fmt: skip


class _Browser:
    """One running Chromium and the parent's ends of its two pipes; the printer's lock serialises its use."""

    def __init__(self, executable: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="deepwml-chromium-")
        commands_in, self.commands = os.pipe()
        self.replies, replies_out = os.pipe()
        try:
            # the browser's own messages go to a file in its profile: a pipe nobody reads would stall it
            with open(Path(self.profile) / "stderr.log", "wb") as log:
                self.process = subprocess.Popen(
                    ["sh", "-c", _ON_FDS_3_AND_4, "sh", *headless_command(executable, self.profile), "--remote-debugging-pipe"],
                    stdin=commands_in, stdout=replies_out, stderr=log,
                    start_new_session=True,  # its own process group: Ctrl-C goes to us, and close() can end all of it
                )
        except OSError:
            for fd in (self.commands, self.replies):
                os.close(fd)
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        finally:
            os.close(commands_in)
            os.close(replies_out)
        os.set_blocking(self.commands, False)  # a browser that stops reading must not block us past the deadline
        self.buffer = bytearray()
        self.scanned = 0  # bytes of the buffer known to hold no NUL
        self.held: List[Dict[str, Any]] = []  # events read while waiting for a reply
        self.last_id = 0
        #: (target id, session id) of the tab every page is printed in: a new tab per page cost ~0.1 s more
        self.tab: Optional[Tuple[str, str]] = None

    def alive(self) -> bool:
        """True while the browser process runs."""
        return self.process.poll() is None

    def send(self, method: str, params: Dict[str, Any], deadline: float, session: Optional[str] = None) -> int:
        """Write one command; returns its id."""
        self.last_id += 1
        message: Dict[str, Any] = {"id": self.last_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        data = memoryview(json.dumps(message).encode() + b"\0")
        while data:
            _wait_for(self.commands, select.POLLOUT, deadline)
            try:
                data = data[os.write(self.commands, data):]
            except BlockingIOError:
                continue
            except OSError:  # EPIPE: the browser has gone
                raise _Gone("closed its pipe") from None
        return self.last_id

    def message(self, deadline: float) -> Dict[str, Any]:
        """The next message from the browser."""
        while True:
            end = self.buffer.find(b"\0", self.scanned)
            if end >= 0:
                raw = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                self.scanned = 0
                try:
                    message = json.loads(raw)
                except ValueError:
                    raise _Gone("sent something that is not a DevTools message") from None
                if not isinstance(message, dict):
                    raise _Gone("sent something that is not a DevTools message")
                return message
            self.scanned = len(self.buffer)
            _wait_for(self.replies, select.POLLIN, deadline)
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                raise _Gone("closed its pipe")
            self.buffer += chunk

    def call(self, method: str, params: Dict[str, Any], deadline: float, session: Optional[str] = None) -> Dict[str, Any]:
        """Send a command and return its result, holding the events that come before the reply."""
        wanted = self.send(method, params, deadline, session)
        while True:
            message = self.message(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise _PageError(f"{method}: {message['error'].get('message', message['error'])}")
                return message.get("result", {})
            if "method" in message:
                self.held.append(message)

    def event(self, method: str, session: str, deadline: float) -> Dict[str, Any]:
        """Wait for the event ``method`` of ``session`` (perhaps already held); a crash of the page is an error."""
        while True:
            message = self.held.pop(0) if self.held else self.message(deadline)
            if message.get("sessionId") != session:
                continue
            if message.get("method") == method:
                return message
            if message.get("method") == "Inspector.targetCrashed":
                raise _PageError("the page crashed")

    def open_tab(self, deadline: float) -> Tuple[str, str]:
        """The tab pages are printed in (opened on first use): its target and session ids."""
        if self.tab is None:
            target = self.call("Target.createTarget", {"url": "about:blank"}, deadline)["targetId"]
            session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, deadline)["sessionId"]
            self.call("Page.enable", {}, deadline, session)
            self.tab = (target, session)
        return self.tab

    def print_page(self, uri: str, deadline: float) -> bytes:
        """The PDF of the page at ``uri``, printed in the browser's one tab (a page that fails closes it)."""
        self.held.clear()
        target, session = self.open_tab(deadline)
        try:
            navigated = self.call("Page.navigate", {"url": uri}, deadline, session)
            if navigated.get("errorText"):
                raise _PageError(f"cannot open the page ({navigated['errorText']})")
            self.event("Page.loadEventFired", session, deadline)
            printed = self.call("Page.printToPDF", PRINT_SETTINGS, deadline, session)
        except _PageError:
            # the browser is fine: the next page gets a fresh tab, and no broken one stays open
            self.tab = None
            self.call("Target.closeTarget", {"targetId": target}, deadline)
            raise
        try:
            return base64.b64decode(printed.get("data", ""), validate=True)
        except (binascii.Error, TypeError):
            raise _PageError("Page.printToPDF returned no base64 data") from None

    def stderr_tail(self) -> str:
        """The last line the browser wrote to stderr, for error messages."""
        try:
            lines = (Path(self.profile) / "stderr.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def close(self, kill: bool = False) -> None:
        """Stop the browser (closing its command pipe asks it to exit; killed after a grace time) and remove its profile."""
        for fd in (self.commands, self.replies):
            try:
                os.close(fd)
            except OSError:
                pass
        if not kill:
            try:
                self.process.wait(CLOSE_GRACE)
            except subprocess.TimeoutExpired:
                kill = True
        if kill:
            try:
                # the whole group: the browser's helper processes, or what a wrapper script started
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def _wait_for(fd: int, event: int, deadline: float) -> None:
    """Block until ``fd`` is ready for ``event`` (POLLIN/POLLOUT) or its pipe closed; TimeoutError at ``deadline``."""
    poller = select.poll()
    poller.register(fd, event)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        if poller.poll(max(1, int(left * 1000))):
            return


class PdfPrinter:
    """Prints HTML files to PDF with one headless Chromium, started on the first print and kept for the next ones.

    Thread-safe (one print at a time). A browser that dies is replaced by a fresh one on the next print; every
    failure is a :class:`DeepWMLError` naming the PDF, and the PDF is written atomically or not at all.
    """

    def __init__(self, executable: str, timeout: float = 120.0) -> None:
        self.executable = executable
        self.timeout = timeout  # seconds for one print, a browser start included
        self.launches = 0  # browsers started so far
        self._browser: Optional[_Browser] = None
        self._lock = threading.Lock()

    def __enter__(self) -> "PdfPrinter":
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()

    @property
    def pid(self) -> Optional[int]:
        """The running browser's process id, or None."""
        browser = self._browser
        return browser.process.pid if browser is not None else None

    def print_pdf(self, html_path: Path, pdf_path: Path) -> Path:
        """Print ``html_path`` to ``pdf_path`` (atomically); one restart when the browser from an earlier print has died."""
        html_path, pdf_path = Path(html_path), Path(pdf_path)
        uri = html_path.resolve().as_uri()
        with self._lock:
            deadline = time.monotonic() + self.timeout
            if self._browser is not None and not self._browser.alive():
                self._drop(kill=True)
            while True:
                fresh = self._browser is None
                try:
                    if fresh:
                        self._start(pdf_path)
                    assert self._browser is not None
                    data = self._browser.print_page(uri, deadline)
                    break
                except _Gone as e:
                    reason = f"{self.executable} {e} while printing {html_path.name}{self._last_words()}"
                    self._drop(kill=True)
                    if fresh:
                        raise DeepWMLError(reason, pdf_path) from None
                    # it died after an earlier print (crash, out of memory, killed): a fresh one gets this page
                except TimeoutError:
                    self._drop(kill=True)
                    raise DeepWMLError(f"{self.executable} did not print {html_path.name} within {self.timeout:g} s", pdf_path) from None
                except _PageError as e:
                    raise DeepWMLError(f"{self.executable} could not print {html_path.name}: {e}", pdf_path) from None
                except BaseException:
                    # Ctrl-C or a surprise half-way through a conversation: the next print starts afresh
                    self._drop(kill=True)
                    raise
        if not data.startswith(b"%PDF"):
            raise DeepWMLError(f"{self.executable} returned no PDF for {html_path.name}", pdf_path)
        write_bytes(pdf_path, data)
        return pdf_path

    def close(self) -> None:
        """Stop the browser, if one runs, and remove its profile; a later print starts a new one."""
        with self._lock:
            self._drop(kill=False)

    def _start(self, pdf_path: Path) -> None:
        """Start a browser (the caller holds the lock)."""
        try:
            self._browser = _Browser(self.executable)
        except OSError as e:
            raise DeepWMLError(f"cannot start {self.executable} ({e.strerror or e})", pdf_path) from None
        self.launches += 1

    def _last_words(self) -> str:
        """The exit status and last stderr line of a browser that went away, when known, for the error message."""
        browser, words = self._browser, ""
        if browser is None:
            return words
        try:
            words = f" (exit status {browser.process.wait(1.0)})"
        except subprocess.TimeoutExpired:
            pass
        tail = browser.stderr_tail()
        return f"{words}; its last message: {tail}" if tail else words

    def _drop(self, kill: bool) -> None:
        """Close and forget the current browser (the caller holds the lock)."""
        browser, self._browser = self._browser, None
        if browser is not None:
            browser.close(kill=kill)
