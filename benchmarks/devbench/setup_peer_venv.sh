#!/usr/bin/env bash
# The venv for benchmarks/devbench/peer_speechbrain.py: SpeechBrain on the system's CPU torch.
# Usage: bash benchmarks/devbench/setup_peer_venv.sh [VENV]   (default $HOME/.venvs/e2espk-peer)
# Seconds and ~60 MB; the system torch (2.13.0+cpu) is seen through system site-packages and
# never replaced (every torch-dependent package is installed --no-deps). See PEER.md.
set -euo pipefail
VENV=${1:-$HOME/.venvs/e2espk-peer}
PY=${PYTHON:-python}
$PY -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install --no-deps speechbrain==1.1.2 torchaudio==2.11.1
"$VENV/bin/pip" install hyperpyyaml sentencepiece huggingface_hub
# PyPI's torchaudio is a CUDA build: its extension needs libc10_cuda.so and `import torchaudio`
# raises beside a CPU torch. Without the extension files torchaudio imports as pure Python
# (its "extension not found" path); SpeechBrain only imports it, the modules used never call it.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -f "$SITE"/torchaudio/lib/*.so
"$VENV/bin/python" -c '
import torch, torchaudio, speechbrain
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier
from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
emb = ECAPA_TDNN(80, channels=[32] * 4 + [96], lin_neurons=192)(torch.randn(2, 100, 80))
print("ok: speechbrain", speechbrain.__version__, "torch", torch.__version__,
      "torchaudio", torchaudio.__version__, "(python only); embedding", tuple(emb.shape))'
