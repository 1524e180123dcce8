#!/usr/bin/env bash
# The e2espk demo, end to end on the built-in synthetic corpus (a few minutes on 2 CPU cores):
#   generate it (Kaldi ark/scp + PTM .pt dict) -> pack into train/valid HDF5 -> inspect
#   -> train a fusion model (PTM + log-mel/pitch) -> eval on the held-out speakers -> embeddings.
# Usage: bash scripts/demo.sh [OUT_DIR]   (default: demo_out)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-demo_out}
PY=${PYTHON:-python}
EPOCHS=${DEMO_EPOCHS:-30}

echo "== 1/6 generate the demo corpus in $OUT/corpus"
$PY data_prep.py demo --out-dir "$OUT/corpus"

echo "== 2/6 pack PTM states (.pt dict) + log-mel/MFCC/pitch (Kaldi dir) into HDF5, 8 held-out speakers"
$PY data_prep.py \
  --ptm "$OUT/corpus/ptm/embedding.pt" --ptm-model demo-ptm \
  --path-to-data "$OUT/corpus/kaldi" \
  --mfcc "kaldi:$OUT/corpus/kaldi:mfcc.scp" \
  --pitch "kaldi:$OUT/corpus/kaldi:pitch.scp" \
  --split-by speaker --valid-size 8 \
  --out-path "$OUT/hdf" --out-name demo --overwrite

echo "== 3/6 inspect"
$PY data_prep.py inspect "$OUT/hdf/demo_train.hdf" "$OUT/hdf/demo_valid.hdf" --no-progress

echo "== 4/6 train: fusion (concat) of PTM and log-mel+pitch, tiny ECAPA-TDNN, $EPOCHS epochs"
rm -rf "$OUT/run"
$PY train.py \
  --train-hdf-file "$OUT/hdf/demo_train.hdf" --valid-hdf-file "$OUT/hdf/demo_valid.hdf" \
  --mode fusion --fusion concat --feature-mode mfbe_pitch --backbone ecapa_tdnn_tiny \
  --batch-size 32 --epochs "$EPOCHS" --lr 0.003 --warmup 20 --dropout-prob 0.1 \
  --checkpoint-path "$OUT/run" --no-progress

echo "== 5/6 eval on the held-out speakers (trials built from the valid file), AS-norm with the train cohort"
$PY eval.py --cp-path "$OUT/run/final.pt" --test-hdf-file "$OUT/hdf/demo_valid.hdf" \
  --cohort-hdf-file "$OUT/hdf/demo_train.hdf" --out-path "$OUT/eval" --no-progress

echo "== 6/6 export embeddings for a PLDA back-end"
$PY embed.py --cp-path "$OUT/run/final.pt" --data "$OUT/hdf/demo_valid.hdf" --out "$OUT/embeddings/valid.ark" --speaker-means --no-progress
