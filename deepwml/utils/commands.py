"""Run DeepWML's public commands from Python, as a user would type them (used by the demo, the recipe, benchmarks)."""
from __future__ import annotations

import subprocess
import sys
import time
from typing import Dict, List

from deepwml.utils.errors import DeepWMLError


def run_command(module: str, args: List[str], env: Dict[str, str], tag: str) -> None:
    """Run ``deepwml_<module> args`` in a subprocess (``python -m deepwml.cli.<module>``, the console script's code)."""
    print(f"[{tag}] $ deepwml_{module} " + " ".join(args), flush=True)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", f"deepwml.cli.{module}", *args], env=env)
    # a long recipe's log then says where its hours went
    print(f"[{tag}] deepwml_{module}: {time.perf_counter() - start:.1f} s", flush=True)
    if result.returncode != 0:
        raise DeepWMLError(
            f"deepwml_{module} failed with exit code {result.returncode}; fix the problem above and run the same command again to resume"
        )
