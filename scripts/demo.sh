#!/usr/bin/env bash
# The e2espk demo, end to end on the built-in synthetic corpus:
#   generate it (Kaldi ark/scp + PTM .pt dict) -> pack it into train/valid HDF5 -> inspect.
# Usage: bash scripts/demo.sh [OUT_DIR]   (default: demo_out)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-demo_out}
PY=${PYTHON:-python}

echo "== 1/3 generate the demo corpus in $OUT/corpus"
$PY data_prep.py demo --out-dir "$OUT/corpus"

echo "== 2/3 pack PTM states (.pt dict) + log-mel/MFCC/pitch (Kaldi dir) into HDF5, 8 held-out speakers"
$PY data_prep.py \
  --ptm "$OUT/corpus/ptm/embedding.pt" --ptm-model demo-ptm \
  --path-to-data "$OUT/corpus/kaldi" \
  --mfcc "kaldi:$OUT/corpus/kaldi:mfcc.scp" \
  --pitch "kaldi:$OUT/corpus/kaldi:pitch.scp" \
  --split-by speaker --valid-size 8 \
  --out-path "$OUT/hdf" --out-name demo --overwrite

echo "== 3/3 inspect"
$PY data_prep.py inspect "$OUT/hdf/demo_train.hdf" "$OUT/hdf/demo_valid.hdf"
