"""The commands in README.md and scripts/demo.sh use only options their scripts accept, so the
docs cannot drift from the code (each script's own ``--help`` is the reference)."""

from __future__ import annotations

import re
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
COMMAND = re.compile(r"(?:python|\$PY) (\w+\.py)((?: (?:demo|inspect))?)((?: [^\n]*)?)")


def shell_commands(text: str) -> list[str]:
    """Lines of the text's shell code (fenced ``bash`` blocks of markdown, or a whole script),
    with backslash continuations joined and comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S) or [text]
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [re.sub(r"(^|\s)#.*", "", line) for line in joined.splitlines()]


def documented_invocations() -> list[tuple[str, str, str, list[str]]]:
    """(source file, script, subcommand, flags) for every script call in the docs."""
    found = []
    for source in ("README.md", "scripts/demo.sh"):
        for line in shell_commands((REPO / source).read_text()):
            for script, sub, rest in COMMAND.findall(line):
                if script in MAINS:
                    flags = sorted(set(re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", rest)))
                    found.append((source, script, sub.strip(), flags))
    return found


INVOCATIONS = documented_invocations()


def test_the_docs_call_every_script() -> None:
    called = {script for _, script, _, _ in INVOCATIONS}
    assert called == set(MAINS), f"never shown in README.md or demo.sh: {set(MAINS) - called}"
    assert any(source == "scripts/demo.sh" for source, *_ in INVOCATIONS)


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
