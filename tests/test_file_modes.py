"""Outputs people share are as readable as any file they write: every file a train, eval or
embed run leaves follows the umask (0644 under 022), temp-file-then-rename writes included."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2espk.cli.embed import main as embed_main
from e2espk.cli.eval import main as eval_main
from e2espk.fileio import atomic_path, new_file_mode
from tests.conftest import TINY_TRAIN


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): oct(stat.S_IMODE(path.stat().st_mode))
        for path in root.rglob("*")
        if path.is_file()
    }


@pytest.mark.usefixtures("umask")
def test_every_output_follows_the_umask(demo_hdf: dict[str, Path], tmp_path: Path) -> None:
    from e2espk.training.config import TrainConfig
    from e2espk.training.trainer import train

    run = tmp_path / "run"
    train(
        TrainConfig.from_flat(dict(
            train_hdf_file=str(demo_hdf["train"]), valid_hdf_file=str(demo_hdf["valid"]),
            checkpoint_path=str(run), backbone="ecapa_tdnn_tiny", epochs=1, **TINY_TRAIN,
        ))
    )  # fmt: skip
    common = ["--cp-path", str(run / "best.pt"), "--no-progress"]
    assert eval_main([*common, "--test-hdf-file", str(demo_hdf["valid"]), "--out-path", str(tmp_path / "eval")]) == 0  # fmt: skip
    assert embed_main([*common, "--data", str(demo_hdf["valid"]), "--out", str(tmp_path / "emb" / "v.h5"), "--speaker-means"]) == 0  # fmt: skip
    found = modes(tmp_path)
    assert {"eval/det.png", "eval/score_histograms.png", "run/best.pt", "emb/v.h5"} <= set(found)
    assert {name: mode for name, mode in found.items() if mode != "0o644"} == {}


def test_atomic_writes_take_the_umask_or_keep_the_replaced_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        assert new_file_mode() == 0o640
        with atomic_path(tmp_path / "a") as tmp:
            tmp.write_text("x")
        assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o640
        os.chmod(tmp_path / "a", 0o600)  # a mode the user chose survives a rewrite
        with atomic_path(tmp_path / "a") as tmp:
            tmp.write_text("y")
        assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o600
    finally:
        os.umask(old)
