"""The commands in README.md, benchmarks/README.md, docs/*.md and scripts/demo.sh run as pasted
and use only options their scripts accept, so the docs cannot drift from the code (each
script's own ``--help`` is the reference).

Commands are split the way the shell splits them: a line continues only when its very last
character is a backslash, and a ``#`` outside quotes starts a comment that runs to the end of
the line. A comment after ``\\`` therefore ends the command there, and the lines below it run
as commands of their own; the checks below catch that rather than reading past it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from e2espk.cli import data_prep, embed, eval, hp_search, train

REPO = Path(__file__).resolve().parents[1]
SEARCHES = ("hp_search.py", "hp_search_slurm.py")  # they pass train.py flags on to each trial
MAINS: dict[str, Callable[[list[str]], int]] = {
    "data_prep.py": data_prep.main,
    "train.py": train.main,
    "eval.py": eval.main,
    "embed.py": embed.main,
    "hp_search.py": hp_search.main,
    "hp_search_slurm.py": hp_search.main_parallel,
}
COMMAND = re.compile(
    r"(?:python|\$PY|torchrun[^\n]*?) (\w+\.py)((?: (?:demo|inspect|extract))?)((?: [^\n]*)?)"
)
DOCS = sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))
MARKDOWN = ["README.md", "benchmarks/README.md", *DOCS]
SCRIPTS = ["scripts/demo.sh"]


def bash_blocks(source: str) -> list[str]:
    """The fenced ``bash`` blocks of a markdown file, or the whole text of a script."""
    text = (REPO / source).read_text()
    if source.endswith(".md"):
        return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    return [text]


def _words(code: str) -> list[str]:
    return shlex.split(code, comments=True)


def split_commands(code: str) -> tuple[list[str], list[str]]:
    """Shell code as the shell reads it: ``(commands, problems)``.

    Each command is the words of one logical line (physical lines joined at a trailing
    backslash, comments dropped). Problems are what makes a pasted block do something other
    than it shows: a backslash followed by blanks or a comment (it escapes a space and the
    command ends there), a continued line that holds a comment (everything after ``#`` is
    dropped, the backslash included), a continuation into a blank or comment line, and a line
    that is indented like a continuation or starts with an option but begins a new command.
    """
    commands: list[str] = []
    problems: list[str] = []
    pending: list[str] = []  # physical lines of the command being continued
    for number, line in enumerate(code.splitlines(), 1):
        where = f"line {number}: {line.strip()!r}"
        if pending and (not line.strip() or line.lstrip().startswith("#")):
            problems.append(f"{where}: a backslash continuation runs into a blank/comment line")
            commands.append(" ".join(_words(" ".join(pending))))
            pending = []
            continue
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if re.search(r"\\[ \t]+(#.*)?$", line):
            problems.append(f"{where}: text after the trailing backslash ends the command here")
        continued = line.endswith("\\")
        body = line[:-1] if continued else line
        if continued and _words(body) != shlex.split(body, comments=False):
            problems.append(f"{where}: a comment inside a continued command drops the backslash")
        if not pending:
            if line[:1].isspace():
                problems.append(f"{where}: indented like a continuation, but starts a new command")
            first = (_words(body) or [""])[0]
            if first.startswith("-"):
                problems.append(
                    f"{where}: starts with an option: the previous line did not continue"
                )
        pending.append(body)
        if not continued:
            commands.append(" ".join(_words(" ".join(pending))))
            pending = []
    if pending:
        problems.append("the last line ends with a backslash")
        commands.append(" ".join(_words(" ".join(pending))))
    return commands, problems


def documented_invocations() -> list[tuple[str, str, str, list[str]]]:
    """(source file, script, subcommand, flags) for every script call in the docs."""
    found = []
    for source in MARKDOWN + SCRIPTS:
        for block in bash_blocks(source):
            for command in split_commands(block)[0]:
                for script, sub, rest in COMMAND.findall(command):
                    if script in MAINS:
                        flags = sorted(set(re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", rest)))
                        found.append((source, script, sub.strip(), flags))
    return found


INVOCATIONS = documented_invocations()
BLOCKS = [
    (source, k, block)
    for source in MARKDOWN + SCRIPTS
    for k, block in enumerate(bash_blocks(source))
]
BLOCK_IDS = [f"{source}:block{k}" for source, k, _ in BLOCKS]


def test_the_docs_call_every_script() -> None:
    called = {script for _, script, _, _ in INVOCATIONS}
    assert called == set(MAINS), f"never shown in the docs or demo.sh: {set(MAINS) - called}"
    assert any(source == "scripts/demo.sh" for source, *_ in INVOCATIONS)


@pytest.mark.parametrize("source,index,block", BLOCKS, ids=BLOCK_IDS)
def test_command_blocks_paste_into_a_shell(source: str, index: int, block: str) -> None:
    _, problems = split_commands(block)
    assert not problems, f"{source}, bash block {index}:\n" + "\n".join(problems)
    if shutil.which("bash"):
        syntax = subprocess.run(
            ["bash", "-n"], input=block, capture_output=True, text=True, check=False
        )
        assert syntax.returncode == 0, f"{source}, bash block {index}: {syntax.stderr}"


@pytest.mark.parametrize(
    "code,problem",
    [
        ("python a.py \\\n  --x 1 \\   # note\n  --y 2\n", "text after the trailing backslash"),
        ("python a.py \\\n  --x 1 # note \\\n  --y 2\n", "comment inside a continued command"),
        ("python a.py \\\n# note\n  --y 2\n", "runs into a blank/comment line"),
        ("python a.py --x 1\n  --y 2\n", "starts with an option"),
        ("python a.py\n  b.py\n", "indented like a continuation"),
    ],
)
def test_broken_continuations_are_caught(code: str, problem: str) -> None:
    _, problems = split_commands(code)
    assert any(problem in p for p in problems), problems


def test_continued_commands_join_like_the_shell() -> None:
    commands, problems = split_commands(
        "# set up\npython a.py \\\n  --x '1 #2' \\\n  --y 2   # end\n\nbash b.sh\n"
    )
    assert not problems
    assert commands == ["python a.py --x 1 #2 --y 2", "bash b.sh"]


def help_text(script: str, subcommand: str, capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_info:
        MAINS[script]([subcommand, "--help"] if subcommand else ["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


INVOCATION_IDS = [
    f"{source}:{script}{'-' + sub if sub else ''}-{k}"
    for k, (source, script, sub, _) in enumerate(INVOCATIONS)
]


@pytest.mark.parametrize("source,script,subcommand,flags", INVOCATIONS, ids=INVOCATION_IDS)
def test_documented_flags_exist(
    source: str, script: str, subcommand: str, flags: list[str], capsys: pytest.CaptureFixture
) -> None:
    accepted = help_text(script, subcommand, capsys)
    if script in SEARCHES:
        assert "every train.py flag" in accepted
        accepted += help_text("train.py", "", capsys)
    unknown = [flag for flag in flags if not re.search(rf"{flag}(?![a-z0-9-])", accepted)]
    assert not unknown, f"{source}: {script} {subcommand} does not accept {unknown}"
