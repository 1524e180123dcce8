"""Versions of everything that shapes the audio and features (for ``meta.json``)."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata

PIP = (
    "numpy",
    "scipy",
    "soxr",
    "soundfile",
    "kaldi-native-fbank",
    "praat-parselmouth",
    "resemblyzer",
    "torch",
    "h5py",
    "tqdm",
)
APT = (
    "espeak-ng",
    "espeak-ng-data",
    "flite",
    "festival",
    "wamerican",
    "festvox-kallpc16k",
    "festvox-kdlpc16k",
    "festvox-us-slt-hts",
    "festvox-italp16k",
    "festvox-itapc16k",
    "festvox-ru",
    "festvox-czech-dita",
    "festvox-czech-krb",
    "festvox-czech-machac",
    "festvox-czech-ph",
    "festvox-suopuhe-lj",
    "festvox-suopuhe-mv",
    "festvox-ca-ona-hts",
)


def _dpkg(name: str) -> str | None:
    try:
        r = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return None
    return r.stdout.strip() or None


def package_versions() -> dict:
    pip = {}
    for name in PIP:
        try:
            pip[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pip[name] = None
    return {
        "python": platform.python_version(),
        "pip": pip,
        "apt": {name: _dpkg(name) for name in APT},
    }
