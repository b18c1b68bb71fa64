"""The commands the README and docs show name only options their command has: a renamed or removed flag fails here,
not in a user's terminal."""
from __future__ import annotations

import configparser
import importlib
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md",
        *sorted((REPO / "deepwml").rglob("*.md"))]
#: a command and what follows it up to the end of its code span, a pipe, a shell separator or a comment
COMMAND = re.compile(r"\b(deepwml_[a-z_]+)\b([^`|;&#]*)")
#: a benchmark script and what follows it, likewise
SCRIPT = re.compile(r"\bbenchmarks/([a-z_0-9]+)\.py\b([^`|;&#]*)")
FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def _commands() -> Dict[str, str]:
    """Installed command -> its module, from setup.cfg's console scripts."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return {name.strip(): target.split(":")[0].strip() for name, target in (line.split("=") for line in lines)}


def code_spans(text: str) -> List[str]:
    """Inline code spans (which may wrap a line) and the lines of fenced blocks (backslash continuations joined)."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    inline = re.findall(r"(?<!`)`([^`]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))
    return inline + [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def flags(rest: str) -> List[str]:
    """The flags of a command's arguments, leaving out quoted ones (another program's command line given to it)."""
    return FLAG.findall(re.sub(r"\"[^\"]*\"|'[^']*'", "", rest))


def unknown_flags(text: str, known: Dict[str, Set[str]]) -> Iterator[Tuple[str, str, str]]:
    """(command, flag, code) for every flag a shown command does not have."""
    for span in code_spans(text):
        for match in COMMAND.finditer(span):
            command, rest = match.groups()
            for flag in flags(rest) if command in known else ():
                if flag not in known[command]:
                    yield command, flag, span.strip()


def unknown_script_flags(text: str) -> Iterator[Tuple[str, str, str]]:
    """(script, flag or 'no such script', code) for every flag a shown benchmark script does not define: its
    parsers are built inside main(), so a flag must appear in its source as a string literal."""
    for span in code_spans(text):
        for match in SCRIPT.finditer(span):
            script, rest = REPO / "benchmarks" / f"{match.group(1)}.py", match.group(2)
            if not script.is_file():
                yield script.name, "no such script", span.strip()
                continue
            source = script.read_text(encoding="utf-8")
            for flag in flags(rest):
                if f'"{flag}"' not in source and f"'{flag}'" not in source:
                    yield script.name, flag, span.strip()


@pytest.fixture(scope="module")
def known() -> Dict[str, Set[str]]:
    return {name: set(importlib.import_module(module).build_parser()._option_string_actions)
            for name, module in _commands().items()}


def test_every_flag_the_docs_show_is_one_of_its_commands(known):
    assert len(known) >= 19 and "--min-lesion-contrast" in known["deepwml_predict"]
    texts = [(path, path.read_text(encoding="utf-8")) for path in DOCS]
    problems = [f"{path.relative_to(REPO)}: {command} has no {flag} (in `{code}`)"
                for path, text in texts for command, flag, code in unknown_flags(text, known)]
    assert not problems, "\n".join(problems)
    # not a check of nothing: every command is shown, with hundreds of flags between them
    shown = [match.groups() for _, text in texts for span in code_spans(text) for match in COMMAND.finditer(span)]
    assert {command for command, _ in shown} >= set(known)
    assert sum(len(flags(rest)) for command, rest in shown if command in known) > 500


def test_every_benchmark_script_the_docs_show_exists_and_has_the_flags_shown():
    texts = [(path, path.read_text(encoding="utf-8")) for path in DOCS]
    problems = [f"{path.relative_to(REPO)}: {script}: {flag} (in `{code}`)"
                for path, text in texts for script, flag, code in unknown_script_flags(text)]
    assert not problems, "\n".join(problems)
    shown = [match.groups() for _, text in texts for span in code_spans(text) for match in SCRIPT.finditer(span)]
    assert len({script for script, _ in shown}) > 30 and sum(len(flags(rest)) for _, rest in shown) > 300


def test_the_check_finds_a_flag_in_a_wrapped_span_and_a_continued_block_line(known):
    text = ("Run `deepwml_predict -i in\n-o out --no-such-flag` first.\n\n```bash\ndeepwml_train -d 501 0 \\\n"
            "    --epochs 5 --bogus   # a comment --not-a-flag\n```\nthen `deepwml_evaluate --help | grep --quiet x`"
            " and `python benchmarks/predict.py --runs 3 --nnunet-cmd \"nnUNetv2_predict -chk x\" --no-such-run`,"
            " `python benchmarks/no_such_script.py`")
    assert [(c, f) for c, f, _ in unknown_flags(text, known)] == [("deepwml_predict", "--no-such-flag"),
                                                                  ("deepwml_train", "--bogus")]
    assert [(s, f) for s, f, _ in unknown_script_flags(text)] == [("predict.py", "--no-such-run"),
                                                                 ("no_such_script.py", "no such script")]
