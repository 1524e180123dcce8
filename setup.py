"""Packaging for e2espk. Console scripts mirror the thin top-level scripts."""

from pathlib import Path

from setuptools import find_packages, setup

COMMANDS = {
    "e2espk-data-prep": "e2espk.cli.data_prep:main",
    "e2espk-inspect": "e2espk.cli.inspect:main",
    "e2espk-demo-corpus": "e2espk.cli.demo_corpus:main",
    "e2espk-train": "e2espk.cli.train:main",
    "e2espk-average": "e2espk.cli.average:main",
    "e2espk-eval": "e2espk.cli.eval:main",
    "e2espk-embed": "e2espk.cli.embed:main",
    "e2espk-hp-search": "e2espk.cli.hp_search:main",
    "e2espk-hp-search-slurm": "e2espk.cli.hp_search_slurm:main",
}

EXTRACT = [
    "soundfile>=0.12",
    "soxr>=0.3",
    "kaldi-native-fbank>=1.18",
    "praat-parselmouth>=0.4.3",
    "transformers>=4.40",
]

setup(
    name="e2espk",
    version="0.1.0",
    description="Speaker verification trained end to end on precomputed speech features",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["e2espk", "e2espk.*"]),
    # torch is not pinned: on CPU-only machines install the CPU wheel first
    # (`pip install torch==2.13.0`), GPU users keep their CUDA build.
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "h5py>=3.8",
        "kaldiio>=2.18",
        "nevergrad>=1.0",
        "submitit>=1.5",
        "scikit-learn>=1.3",
        "tensorboard>=2.14",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pyyaml>=6.0",
    ],
    extras_require={
        # `data_prep.py extract`: audio decoding/resampling, Kaldi fbank/MFCC, Praat pitch, PTMs
        "extract": EXTRACT,
        # the test suite runs the extraction tests too, so dev pulls the extract extra in
        "dev": ["pytest>=7", "ruff>=0.5", "mypy>=1.8", *EXTRACT],
        # benchmarks/devbench (real-audio dev benchmark); also needs Debian's espeak-ng, flite,
        # festival voices and `pip install --no-deps resemblyzer` (benchmarks/devbench/README.md)
        "devbench": [
            "soxr>=0.3",
            "soundfile>=0.12",
            "kaldi-native-fbank>=1.18",
            "praat-parselmouth>=0.4.3",
            "scipy>=1.10",
        ],
    },
    entry_points={"console_scripts": [f"{name}={target}" for name, target in COMMANDS.items()]},
)
