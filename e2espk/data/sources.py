"""Readers for the feature files people already have, keyed by utterance id.

A source lists its utterance ids cheaply and loads one utterance at a time, so packing a
terabyte corpus keeps memory flat. Kinds (registry ``SOURCES``), chosen explicitly with a
``kind:`` prefix or detected from the path:

- ``kaldi``: a Kaldi data dir with ``feats.scp`` (``kaldi:DIR:pitch.scp`` picks another scp);
- ``scp``: a Kaldi ``.scp`` file (ark via kaldiio, loaded lazily);
- ``ark``: a Kaldi ``.ark`` file on its own (indexed in one pass, then loaded by offset);
- ``ptdict``: a whole-corpus ``.pt`` dict ``{utt_id: tensor}`` (memory-mapped when possible);
- ``files``: a directory of per-utterance ``.npy``/``.npz``/``.pt`` files, id = relative path
  without extension;
- ``manifest``: a text file of ``utt_id path`` lines (relative paths from the manifest's dir).

Kaldi rspecifiers are accepted as written for Kaldi tools: ``scp:feats.scp``,
``ark:feats.ark``, with options such as ``scp,p:`` or ``ark,s,cs:`` (ignored: every entry is
read by key).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from e2espk.errors import InputDataError
from e2espk.registry import Registry

LOG = logging.getLogger(__name__)
ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth")
RSPECIFIER = re.compile(r"^(ark|scp)((?:,[a-z]+)*):(.*)$")  # Kaldi's "scp,p:feats.scp"


class FeatureSource:
    """Utterance id -> array, for one stream from one place on disk."""

    kind = "source"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids: list[str] = []

    def ids(self) -> list[str]:
        return self._ids

    def load(self, utterance: str) -> np.ndarray:
        raise NotImplementedError

    def where(self, utterance: str) -> str:
        """Where an utterance comes from, for error messages."""
        return str(self.path)

    def files(self) -> list[Path]:
        """Every file this source reads, so callers can tell whether its data changed."""
        return [self.path]


SOURCES: Registry[Callable[[Path, str | None], FeatureSource]] = Registry("feature source kind")


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    """Lines of ``key value`` (value may contain spaces); names the line on error."""
    pairs = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise InputDataError(path, f"line {number}: expected '<id> <value>', got {line!r}")
            pairs.append((parts[0], parts[1]))
    return pairs


def _check_unique(path: Path, keys: Iterable[str]) -> None:
    seen: set[str] = set()
    duplicates = []
    for key in keys:
        if key in seen:
            duplicates.append(key)
        seen.add(key)
    if duplicates:
        shown = ", ".join(repr(key) for key in duplicates[:5])
        raise InputDataError(path, f"duplicate utterance id(s): {shown} ({len(duplicates)} in all)")


@SOURCES.register("scp")
class ScpSource(FeatureSource):
    """A Kaldi script file; matrices are read lazily from their ark files by kaldiio."""

    kind = "scp"

    def __init__(self, path: Path, option: str | None = None) -> None:
        import kaldiio

        super().__init__(path)
        if not path.is_file():
            raise InputDataError(path, "scp file not found")
        pairs = _read_pairs(path)
        _check_unique(path, (key for key, _ in pairs))
        self._ids = [key for key, _ in pairs]
        self._table = kaldiio.load_scp(str(path))
        self._arks = sorted({value.rsplit(":", 1)[0] for _, value in pairs})  # "file.ark:offset"

    def files(self) -> list[Path]:
        return [self.path, *(Path(ark) for ark in self._arks)]

    def load(self, utterance: str) -> np.ndarray:
        try:
            return np.asarray(self._table[utterance])
        except Exception as error:  # kaldiio raises many kinds on truncated/corrupt arks
            raise InputDataError(
                self.path, f"utterance {utterance!r}: cannot read ark entry ({error})"
            ) from None


@SOURCES.register("ark")
class ArkSource(FeatureSource):
    """A Kaldi archive without its scp: one pass records where each entry starts, and entries
    are then read by offset, as an scp line ``file.ark:offset`` would read them."""

    kind = "ark"

    def __init__(self, path: Path, option: str | None = None) -> None:
        from kaldiio.matio import read_kaldi, read_token

        super().__init__(path)
        if not path.is_file():
            raise InputDataError(path, "ark file not found")
        self._offsets: dict[str, int] = {}
        with path.open("rb") as handle:
            try:
                while (key := read_token(handle)) is not None:
                    if key in self._offsets:
                        raise InputDataError(path, f"duplicate utterance id {key!r}")
                    self._offsets[key] = handle.tell()
                    read_kaldi(handle)
            except InputDataError:
                raise
            except Exception as error:  # kaldiio raises many kinds on truncated/corrupt arks
                raise InputDataError(path, f"cannot index the ark ({error})") from None
        self._ids = list(self._offsets)

    def load(self, utterance: str) -> np.ndarray:
        import kaldiio

        return np.asarray(kaldiio.load_mat(f"{self.path}:{self._offsets[utterance]}"))


@SOURCES.register("kaldi")
def kaldi_dir_source(path: Path, option: str | None = None) -> FeatureSource:
    """A Kaldi data dir: its ``feats.scp`` or the scp named by ``option``."""
    if not path.is_dir():
        raise InputDataError(path, "Kaldi data dir not found")
    scp = path / (option or "feats.scp")
    if not scp.is_file():
        raise InputDataError(path, f"Kaldi data dir has no {scp.name}")
    return ScpSource(scp)


def _load_array_file(path: Path, key: str | None = None) -> np.ndarray:
    """One utterance's array from a .npy/.npz/.pt file."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if len(names) == 1:
                    return archive[names[0]]
                if key in names:
                    return archive[key]
                raise InputDataError(path, f"npz holds {names}; name the array with kind:path:KEY")
        import torch

        value = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(value, dict):
            if key is None or key not in value:
                raise InputDataError(
                    path, f"file holds a dict with keys {sorted(value)[:5]}; name one with :KEY"
                )
            value = value[key]
        return to_numpy(value)
    except InputDataError:
        raise
    except Exception as error:
        raise InputDataError(
            path, f"cannot read array file ({type(error).__name__}: {error})"
        ) from None


@SOURCES.register("files")
class FileTreeSource(FeatureSource):
    """A directory of per-utterance array files; id = relative path without its suffix."""

    kind = "files"

    def __init__(self, path: Path, option: str | None = None) -> None:
        super().__init__(path)
        if not path.is_dir():
            raise InputDataError(path, "feature directory not found")
        self._key = option
        self._files: dict[str, Path] = {}
        for file in sorted(path.rglob("*")):
            if file.suffix in ARRAY_SUFFIXES and file.is_file():
                utterance = file.relative_to(path).with_suffix("").as_posix()
                if utterance in self._files:
                    raise InputDataError(
                        path,
                        f"duplicate utterance id {utterance!r}: {self._files[utterance].name} and {file.name}",
                    )
                self._files[utterance] = file
        if not self._files:
            raise InputDataError(path, f"no {'/'.join(ARRAY_SUFFIXES)} files found")
        self._ids = list(self._files)

    def load(self, utterance: str) -> np.ndarray:
        return _load_array_file(self._files[utterance], self._key)

    def where(self, utterance: str) -> str:
        return str(self._files[utterance])

    def files(self) -> list[Path]:
        listed = [self.path] if self.path.is_file() else []  # a manifest lists the files
        return [*listed, *self._files.values()]


@SOURCES.register("manifest")
class ManifestSource(FileTreeSource):
    """A list of ``utt_id path`` lines pointing at per-utterance array files."""

    kind = "manifest"

    def __init__(self, path: Path, option: str | None = None) -> None:
        FeatureSource.__init__(self, path)
        if not path.is_file():
            raise InputDataError(path, "manifest not found")
        pairs = _read_pairs(path)
        _check_unique(path, (key for key, _ in pairs))
        self._key = option
        self._files = {}
        for utterance, name in pairs:
            file = Path(name) if Path(name).is_absolute() else path.parent / name
            if not file.is_file():
                raise InputDataError(path, f"utterance {utterance!r}: file {file} not found")
            self._files[utterance] = file
        self._ids = list(self._files)


@SOURCES.register("ptdict")
class TorchDictSource(FeatureSource):
    """A whole-corpus ``{utt_id: tensor}`` dict saved with ``torch.save`` (e.g. embedding.pt)."""

    kind = "ptdict"

    def __init__(self, path: Path, option: str | None = None) -> None:
        super().__init__(path)
        self._table = load_torch_dict(path)
        self._ids = [str(key) for key in self._table]

    def load(self, utterance: str) -> np.ndarray:
        return to_numpy(self._table[utterance])


def to_numpy(value: Any) -> np.ndarray:
    """A tensor or array-like as numpy (bfloat16, which numpy lacks, becomes float32)."""
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def load_torch_dict(path: Path) -> dict[str, Any]:
    """torch.load a dict, memory-mapped when the file allows it (no full copy in RAM)."""
    import torch

    if not path.is_file():
        raise InputDataError(path, "file not found")
    try:
        try:
            table = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputDataError(
            path, f"cannot read torch file ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(table, dict):
        raise InputDataError(
            path, f"expected a dict {{utt_id: tensor}}, got {type(table).__name__}"
        )
    return table


def detect_kind(path: Path) -> str:
    """Guess the source kind from what is on disk."""
    if path.is_dir():
        return "kaldi" if (path / "feats.scp").is_file() else "files"
    if path.suffix == ".scp":
        return "scp"
    if path.suffix == ".ark":
        return "ark"
    if path.suffix in (".pt", ".pth"):
        return "ptdict"
    if path.suffix in (".txt", ".list", ".lst", ".tsv", ".manifest"):
        return "manifest"
    raise InputDataError(
        path,
        f"cannot tell what kind of feature source this is; prefix it with one of {SOURCES.names()} and ':'",
    )


def open_source(spec: str) -> FeatureSource:
    """Open ``[kind:]path[:option]`` (e.g. ``kaldi:data/train:pitch.scp`` or ``feats.pt``), or
    a Kaldi rspecifier (``scp:feats.scp``, ``ark,s,cs:feats.ark``)."""
    rspecifier = RSPECIFIER.match(spec)
    if rspecifier:
        kind, _, target = rspecifier.groups()
        if target in ("", "-") or target.endswith("|"):
            raise InputDataError(spec, "pipes and stdin cannot be read; give the file itself")
        return SOURCES.build(kind, path=Path(target), option=None)
    kind, rest = spec.split(":", 1) if spec.split(":", 1)[0] in SOURCES else (None, spec)
    option = None
    if kind is not None and ":" in rest:
        rest, option = rest.rsplit(":", 1)
    path = Path(rest)
    if kind is None and not path.exists():
        raise InputDataError(path, "feature source not found")
    return SOURCES.build(kind or detect_kind(path), path=path, option=option)


def read_speaker_map(path: Path) -> dict[str, str]:
    """utt -> speaker from ``utt2spk``, ``spk2utt`` (name contains spk2utt) or a ``.pt`` dict."""
    if not path.is_file():
        raise InputDataError(path, "speaker map not found")
    if path.suffix in (".pt", ".pth"):
        return {str(utt): str(spk) for utt, spk in load_torch_dict(path).items()}
    pairs = _read_pairs(path)
    if "spk2utt" in path.name:
        mapping: dict[str, str] = {}
        for speaker, utterances in pairs:
            for utterance in utterances.split():
                if utterance in mapping:
                    raise InputDataError(path, f"utterance {utterance!r} listed under two speakers")
                mapping[utterance] = speaker
        return mapping
    _check_unique(path, (utt for utt, _ in pairs))
    return {utt: spk.strip() for utt, spk in pairs}


def speaker_map_of_kaldi_dir(path: Path) -> Path | None:
    """The utt2spk (or spk2utt) file of a Kaldi data dir, if it has one."""
    for name in ("utt2spk", "spk2utt"):
        if (path / name).is_file():
            return path / name
    return None
