"""The three model modes and their command-line aliases: one table for the corpus layout, the
model config, the training flags and the search constraints."""

from __future__ import annotations

from e2espk.errors import ConfigError

MODES = ("ptm", "handcrafted", "fusion")
# name -> mode, with the numeric aliases of the original e2e tools (--mode 1|2|3)
MODE_ALIASES: dict[str, str] = {
    **{mode: mode for mode in MODES},
    **{str(number): mode for number, mode in enumerate(MODES, start=1)},
}


def canonical_mode(mode: str | int) -> str:
    """'ptm' | 'handcrafted' | 'fusion' for a mode name (any case) or its alias 1, 2, 3."""
    key = str(mode).strip().lower()
    if key not in MODE_ALIASES:
        raise ConfigError(
            f"unknown mode {mode!r}; choose one of: ptm (1), handcrafted (2), fusion (3)"
        )
    return MODE_ALIASES[key]
