"""The corpus plan: families per split, speakers, sessions and utterances, all from one seed.

Nothing is synthesised here; the plan is a pure function of (seed, sizes) so the build can be
resumed or checked, and ``meta.json`` records it in full.

Split design. Train and valid share the *training families* (valid = extra speakers of some of
those families: what a user's own held-out split looks like). Test families never appear in
train or valid: held-out espeak-ng variants on held-out languages, the flite ``rms`` voice and
four festival voices. ``heldout`` is a second validation split whose families, like the test
families, never occur in training: espeak-ng variants used nowhere else, on training languages
(so no test language is seen before the test). It is drawn after everything else, so adding it
left the train, valid and test splits of earlier builds unchanged. Every family has several
speakers, so same-family non-target trials exist.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import voices as V
from .channel import Session, draw_session

WORDLIST = Path("/usr/share/dict/american-english")  # Debian package wamerican


@dataclass(frozen=True)
class Sizes:
    """How big the corpus is. ``full()`` is the benchmark, ``small()`` the smoke test."""

    espeak_train_families: int = 29
    espeak_test_families: int = 5
    other_train: tuple[str, ...] = tuple(f"flite:{v}" for v in V.FLITE_TRAIN) + tuple(
        f"festival:{v}" for v in V.FESTIVAL_TRAIN
    )
    other_test: tuple[str, ...] = tuple(f"flite:{v}" for v in V.FLITE_TEST) + tuple(
        f"festival:{v}" for v in V.FESTIVAL_TEST
    )
    train_per_family: int = 3
    test_per_family: int = 4
    valid_families: int = 7  # training families that get extra (validation) speakers
    valid_per_family: int = 2  # >= 2, so valid has same-family non-targets too
    heldout_families: int = 6  # espeak-ng families of the held-out-family validation split
    heldout_per_family: int = 3
    utts: tuple[int, int] = (25, 30)  # per speaker, inclusive
    sessions: tuple[int, int] = (3, 4)

    @classmethod
    def full(cls) -> Sizes:
        return cls()

    @classmethod
    def small(cls) -> Sizes:
        return cls(
            espeak_train_families=2,
            espeak_test_families=1,
            other_train=("festival:kal_diphone",),
            other_test=("flite:rms",),
            train_per_family=2,
            test_per_family=2,
            valid_families=1,
            heldout_families=1,
            heldout_per_family=2,
            utts=(4, 4),
            sessions=(2, 2),
        )


@dataclass
class Utt:
    id: str  # "<speaker>/ses<k>-u<jj>", the id in the packed corpus
    split: str
    speaker: str
    session: int
    index: int  # global index: seeds the channel noise of this utterance
    text: str
    jitter: tuple[float, float]  # (pitch, rate) factors of session drift x utterance jitter
    babble_from: list[int] = field(default_factory=list)  # indices of other utterances


@dataclass
class Plan:
    seed: int
    families: dict[str, list[V.Family]]  # split-side ("train", "test", "heldout") -> families
    speakers: dict[str, list[V.Speaker]]  # split -> speakers
    sessions: dict[str, list[Session]]  # speaker -> sessions
    utts: list[Utt]

    def speaker(self, name: str) -> V.Speaker:
        return next(s for ss in self.speakers.values() for s in ss if s.name == name)

    def summary(self) -> dict:
        return {
            "families": {k: [f.name for f in v] for k, v in self.families.items()},
            "speakers": {k: [s.as_dict() for s in v] for k, v in self.speakers.items()},
            "sessions": {k: [s.as_dict() for s in v] for k, v in self.sessions.items()},
        }

    def utt_table(self) -> list[dict]:
        return [asdict(u) for u in self.utts]


def load_words(path: Path = WORDLIST) -> list[str]:
    words = [w.strip() for w in path.read_text(encoding="utf-8", errors="ignore").splitlines()]
    return sorted(
        {w for w in words if w.isascii() and w.isalpha() and w.islower() and 3 <= len(w) <= 10}
    )


def _families(sizes: Sizes, rng: np.random.Generator) -> dict[str, list[V.Family]]:
    variants = list(rng.permutation(V.ESPEAK_VARIANTS))
    n_tr, n_te, n_ho = (
        sizes.espeak_train_families,
        sizes.espeak_test_families,
        sizes.heldout_families,
    )
    if n_tr + n_te + n_ho > len(variants):
        raise ValueError(
            f"only {len(variants)} espeak-ng variants for {n_tr + n_te + n_ho} families"
        )
    lang_tr = list(rng.permutation(V.ESPEAK_LANGS_TRAIN))
    lang_te = list(rng.permutation(V.ESPEAK_LANGS_TEST))
    train = [V.espeak_family(v, lang_tr[i % len(lang_tr)]) for i, v in enumerate(variants[:n_tr])]
    test = [
        V.espeak_family(v, lang_te[i % len(lang_te)])
        for i, v in enumerate(variants[n_tr : n_tr + n_te])
    ]
    train += [V.other_family(*s.split(":")) for s in sizes.other_train]
    test += [V.other_family(*s.split(":")) for s in sizes.other_test]
    # drawn last: the draws above are those of builds without this split
    lang_ho = list(rng.permutation(V.ESPEAK_LANGS_TRAIN))
    heldout = [
        V.espeak_family(v, lang_ho[i % len(lang_ho)])
        for i, v in enumerate(variants[n_tr + n_te : n_tr + n_te + n_ho])
    ]
    return {"train": train, "test": test, "heldout": heldout}


def _text(words: list[str], rng: np.random.Generator) -> str:
    """6-14ish random words sized for a 2-6 s utterance (~2.6 words/s)."""
    n = int(np.clip(round(rng.uniform(2.2, 5.6) * 2.6), 5, 15))
    return " ".join(words[i] for i in rng.integers(0, len(words), n))


def make_plan(seed: int, sizes: Sizes, words: list[str]) -> Plan:
    """Deterministic plan; every random draw comes from a generator keyed by (seed, purpose, i)."""
    fams = _families(sizes, np.random.default_rng([seed, 0]))
    rng = np.random.default_rng([seed, 1])
    # split order matters: utterance indices (channel seeds) and babble draws follow it
    speakers: dict[str, list[V.Speaker]] = {"train": [], "valid": [], "test": [], "heldout": []}
    valid_fams = set(rng.choice(len(fams["train"]), sizes.valid_families, replace=False).tolist())
    for i, fam in enumerate(fams["train"]):
        n = sizes.train_per_family + sizes.valid_per_family * (i in valid_fams)
        spks = [V.draw_speaker(fam, k, rng) for k in range(n)]
        speakers["train"] += spks[: sizes.train_per_family]
        speakers["valid"] += spks[sizes.train_per_family :]
    for fam in fams["test"]:
        speakers["test"] += [V.draw_speaker(fam, k, rng) for k in range(sizes.test_per_family)]
    for fam in fams["heldout"]:
        speakers["heldout"] += [
            V.draw_speaker(fam, k, rng) for k in range(sizes.heldout_per_family)
        ]

    sessions: dict[str, list[Session]] = {}
    utts: list[Utt] = []
    for split, spks in speakers.items():
        for _si, spk in enumerate(spks):
            r = np.random.default_rng([seed, 2, hash_name(spk.name)])
            n_ses = int(r.integers(sizes.sessions[0], sizes.sessions[1] + 1))
            r_ch = np.random.default_rng([seed, 7, hash_name(spk.name)])  # channel: own stream
            sessions[spk.name] = [draw_session(r_ch) for _ in range(n_ses)]
            drift = [
                (float(r.uniform(0.96, 1.04)), float(r.uniform(0.95, 1.05))) for _ in range(n_ses)
            ]
            n_utt = int(r.integers(sizes.utts[0], sizes.utts[1] + 1))
            ses_of = np.sort(np.arange(n_utt) % n_ses)
            for j in range(n_utt):
                k = int(ses_of[j])
                jit = (
                    drift[k][0] * float(r.uniform(0.97, 1.03)),
                    drift[k][1] * float(r.uniform(0.95, 1.05)),
                )
                utts.append(
                    Utt(
                        f"{spk.name}/ses{k}-u{j:02d}",
                        split,
                        spk.name,
                        k,
                        len(utts),
                        _text(words, r),
                        jit,
                    )
                )
    _assign_babble(utts, np.random.default_rng([seed, 3]))
    return Plan(seed, fams, speakers, sessions, utts)


def hash_name(name: str) -> int:
    """Stable (non-salted) 32-bit hash of a name, for seeding."""
    h = 2166136261
    for ch in name.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


def _assign_babble(utts: list[Utt], rng: np.random.Generator) -> None:
    """Each utterance may babble with 3-6 utterances of *other* speakers of the same split."""
    by_split: dict[str, list[Utt]] = {}
    for u in utts:
        by_split.setdefault(u.split, []).append(u)
    for group in by_split.values():
        for u in group:
            pool = [o.index for o in group if o.speaker != u.speaker]
            if pool:
                k = min(len(pool), int(rng.integers(3, 7)))
                u.babble_from = sorted(int(i) for i in rng.choice(pool, k, replace=False))
