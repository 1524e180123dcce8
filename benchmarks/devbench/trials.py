"""Kaldi trial lists (``enroll test target|nontarget``) with same-family hard non-targets.

Targets: every same-speaker pair (so within- and cross-session ones in their natural ratio),
subsampled only beyond ``max_targets``. Non-targets: ``hard`` x targets pairs of different
speakers of the *same family* (all of them if there are fewer) and ``easy`` x targets pairs
across families, drawn without repetition. Pair order and line order are shuffled (seeded).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TrialCounts:
    target: int
    nontarget_same_family: int
    nontarget_other_family: int
    target_cross_session: int


def build(
    ids: list[str],
    spk_of: dict[str, str],
    fam_of: dict[str, str],
    seed: int,
    hard: float = 2.0,
    easy: float = 3.0,
    max_targets: int = 20000,
) -> tuple[list[tuple[str, str, bool]], TrialCounts]:
    rng = np.random.default_rng([seed, 6])
    ids = sorted(ids)
    by_spk: dict[str, list[str]] = {}
    for u in ids:
        by_spk.setdefault(spk_of[u], []).append(u)
    tgt = [p for us in by_spk.values() for p in itertools.combinations(us, 2)]
    if len(tgt) > max_targets:
        tgt = [tgt[i] for i in sorted(rng.choice(len(tgt), max_targets, replace=False))]
    same_fam = [
        (a, b)
        for a, b in itertools.combinations(ids, 2)
        if fam_of[a] == fam_of[b] and spk_of[a] != spk_of[b]
    ]
    n_hard = min(len(same_fam), int(hard * len(tgt)))
    hard_pairs = [same_fam[i] for i in sorted(rng.choice(len(same_fam), n_hard, replace=False))]
    fam_sizes = np.unique([fam_of[u] for u in ids], return_counts=True)[1]
    n_cross = (len(ids) ** 2 - int(np.sum(fam_sizes**2))) // 2
    n_easy = min(int(easy * len(tgt)), n_cross // 2)  # rejection sampling stays cheap
    seen: set[tuple[str, str]] = set()
    arr = np.array(ids)
    while len(seen) < n_easy:
        a, b = rng.integers(0, len(ids), (2, 2 * n_easy))
        for i, j in zip(a, b, strict=True):
            x, y = (arr[i], arr[j]) if i < j else (arr[j], arr[i])
            if fam_of[x] != fam_of[y] and (x, y) not in seen:
                seen.add((x, y))
                if len(seen) == n_easy:
                    break
    lines = [(a, b, True) for a, b in tgt] + [(a, b, False) for a, b in hard_pairs]
    lines += [(a, b, False) for a, b in sorted(seen)]
    flip = rng.random(len(lines)) < 0.5
    lines = [(b, a, t) if f else (a, b, t) for (a, b, t), f in zip(lines, flip, strict=True)]
    lines = [lines[i] for i in rng.permutation(len(lines))]
    cross = sum(1 for a, b in tgt if a.split("/")[1].split("-")[0] != b.split("/")[1].split("-")[0])
    return lines, TrialCounts(len(tgt), n_hard, n_easy, cross)


def write(path: Path, lines: list[tuple[str, str, bool]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{a} {b} {'target' if t else 'nontarget'}\n" for a, b, t in lines))
    tmp.replace(path)
