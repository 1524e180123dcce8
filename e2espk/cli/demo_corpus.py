"""``data_prep.py demo``: write the built-in synthetic demo corpus (Kaldi dir + PTM .pt dict)."""

from __future__ import annotations

from collections.abc import Sequence

from e2espk.cli.common import user_errors_exit_cleanly
from e2espk.config import parse_config
from e2espk.data.demo import DemoConfig, write_demo_corpus


@user_errors_exit_cleanly
def main(argv: Sequence[str] | None = None) -> int:
    config = parse_config(DemoConfig, argv, description=__doc__, prog="data_prep.py demo")
    paths = write_demo_corpus(config)
    print(f"kaldi data dir: {paths.kaldi_dir} (feats.scp = log-mel, mfcc.scp, pitch.scp, utt2spk)")
    print(f"PTM states:     {paths.ptm_dict} (with {paths.utt2spk})")
    return 0
