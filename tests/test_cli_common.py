"""What every command shares when its caller goes away: no traceback, a shell's exit code."""
from __future__ import annotations

import subprocess
import sys

from deepwml.cli.common import EXIT_BROKEN_PIPE


def test_a_reader_that_stops_reading_gets_no_traceback():
    """`deepwml_... | head`: the command ends with the code a shell gives SIGPIPE and says nothing on stderr."""
    code = ("import sys\nfrom deepwml.cli.common import run\n"
            "def talk(argv):\n    for _ in range(2000):\n        print('x' * 1000)\n    return 0\n"
            "sys.exit(run(talk))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == EXIT_BROKEN_PIPE
    assert err == ""
