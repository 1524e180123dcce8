"""Reference EERs of training-free scorers: is the test task neither trivial nor impossible?

- ``mean_logmel``: cosine between utterance means of the 80 log-mel bands, after subtracting
  the mean over all utterances of the split (a channel + long-term-spectrum baseline);
- ``mean_logmel_shape``: the same with each utterance's mean over bands (its level) removed;
- ``mean_lstm3``: the same on the mean of resemblyzer's last LSTM layer;
- ``dvector``: resemblyzer's own utterance embedding (its projection + ReLU + L2 over 1.6 s
  partials), the "pretrained d-vector" reference. It was trained on real speech (LibriSpeech,
  VoxCeleb), so synthetic speakers are out of its domain.
"""

from __future__ import annotations

import numpy as np

from e2espk.scoring.metrics import compute_eer


def _cos_scores(
    emb: dict[str, np.ndarray], lines: list[tuple[str, str, bool]], centre: bool
) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted({k for a, b, _ in lines for k in (a, b)})
    m = np.stack([emb[k] for k in keys]).astype(np.float64)
    if centre:
        m = m - m.mean(0)
    m /= np.linalg.norm(m, axis=1, keepdims=True) + 1e-12
    row = {k: i for i, k in enumerate(keys)}
    a = np.array([row[x] for x, _, _ in lines])
    b = np.array([row[y] for _, y, _ in lines])
    return np.sum(m[a] * m[b], axis=1), np.array([t for _, _, t in lines])


def eers(
    stats: dict[str, dict[str, np.ndarray]],
    lines: list[tuple[str, str, bool]],
    fam_of: dict[str, str],
) -> dict[str, dict[str, float]]:
    """EER (%) of each scorer on all trials and on targets vs same-family non-targets only."""
    hard = np.array([t or fam_of[a] == fam_of[b] for a, b, t in lines])
    out = {}
    stats = {
        **stats,
        "mean_logmel_shape": {k: v - v.mean() for k, v in stats["mean_logmel"].items()},
    }
    for name, centre in (
        ("mean_logmel", True),
        ("mean_logmel_shape", True),
        ("mean_lstm3", True),
        ("dvector", False),
    ):
        s, y = _cos_scores(stats[name], lines, centre)
        out[name] = {
            "all": round(100 * compute_eer(s, y), 2),
            "same_family_nontargets": round(100 * compute_eer(s[hard], y[hard]), 2),
        }
    return out
