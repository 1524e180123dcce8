"""Batched trial scoring (e2espk.scoring.scores, PairVerifier.score_pairs) against per-pair
reference computations, across chunk boundaries and every verifier shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from e2espk.models.verification import PairVerifier, gathered_pair_chunks
from e2espk.scoring.scores import cosine_scores, fuse, learned_scores, score_all


def random_trials(n_rows: int, n_trials: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((n_rows, 12)).astype(np.float32)
    return table, rng.integers(0, n_rows, n_trials), rng.integers(0, n_rows, n_trials)


def test_cosine_scores_match_per_pair_cosine_across_blocks() -> None:
    table, idx_a, idx_b = random_trials(40, 101)
    table[7] = 0.0  # a zero embedding scores 0, not NaN
    idx_a[:3] = 7
    idx_a[10:14], idx_b[10:14] = 5, 9  # the same trial several times
    idx_b[20] = idx_a[20]  # an utterance against itself
    expected = [
        float(np.dot(table[a], table[b]))
        / max(float(np.linalg.norm(table[a]) * np.linalg.norm(table[b])), 1e-24)
        for a, b in zip(idx_a, idx_b, strict=True)
    ]
    assert expected[20] == pytest.approx(1.0)
    for block in (1, 7, 100, 101, 4096):
        scores = cosine_scores(table, idx_a, idx_b, block_size=block)
        assert scores.dtype == np.float32 and scores.shape == (101,)
        np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert np.all(cosine_scores(table, idx_a[:3], idx_b[:3]) == 0.0)
    # the caller's array is neither normalised nor copied into
    assert np.linalg.norm(table[0]) != pytest.approx(1.0)
    assert cosine_scores(table, idx_a[:0], idx_b[:0]).shape == (0,)
    same = cosine_scores(table.astype(np.float64), idx_a.astype(np.int32), idx_b)
    np.testing.assert_allclose(same, expected, atol=1e-6)


def test_cosine_scores_with_more_trials_than_distinct_pairs() -> None:
    """The sparse kernel holds one entry per (row, column): repeats are scored once."""
    table, idx_a, idx_b = random_trials(2, 9)
    expected = [
        np.dot(table[a], table[b]) / (np.linalg.norm(table[a]) * np.linalg.norm(table[b]))
        for a, b in zip(idx_a, idx_b, strict=True)
    ]
    np.testing.assert_allclose(cosine_scores(table, idx_a, idx_b), expected, atol=1e-6)
    np.testing.assert_allclose(
        cosine_scores(table[:1], np.zeros(3, int), np.zeros(3, int)), [1, 1, 1], atol=1e-6
    )
    reversed_rows = np.arange(2)[::-1]  # a negative-stride view
    np.testing.assert_allclose(
        cosine_scores(table, reversed_rows, np.arange(2)),
        [expected_cos(table, 1, 0)] * 2,
        atol=1e-6,
    )


def expected_cos(table: np.ndarray, a: int, b: int) -> float:
    return float(np.dot(table[a], table[b]) / (np.linalg.norm(table[a]) * np.linalg.norm(table[b])))


def test_cosine_scores_reject_bad_indices() -> None:
    table, idx_a, idx_b = random_trials(40, 10)
    bad = idx_b.copy()
    bad[3] = 40  # one past the end: must never reach the sparse kernel
    with pytest.raises(IndexError, match=r"\[0, 40\), got .*40"):
        cosine_scores(table, idx_a, bad)
    bad[3] = -1
    with pytest.raises(IndexError, match="got -1"):
        cosine_scores(table, bad, idx_b)
    with pytest.raises(ValueError, match="index shapes differ"):
        cosine_scores(table, idx_a, idx_b[:5])
    with pytest.raises(TypeError, match="must be integers, got float64"):
        cosine_scores(table, idx_a + 0.5, idx_b)


@pytest.mark.parametrize(
    "shape",
    [
        {},  # the default: 2 hidden layers
        {"n_hidden": 0},  # a linear head
        {"n_hidden": 3, "hidden_size": 5},
        {"ndiscriminators": 3},
        {"rproj_size": 4, "normalize": True},
        {"dropout": 0.5},
    ],
    ids=["default", "linear", "deep", "three-heads", "rproj-normalize", "dropout"],
)
def test_score_pairs_equals_per_pair_score(shape: dict) -> None:
    torch.manual_seed(0)
    verifier = PairVerifier(12, **{"hidden_size": 16, **shape})
    table, idx_a, idx_b = random_trials(30, 53, seed=1)
    emb = torch.from_numpy(table)
    verifier.eval()
    with torch.no_grad():
        expected = verifier.score(emb[idx_a], emb[idx_b])
    verifier.train()  # batched scoring never applies dropout, whatever the mode
    for chunk in (1, 10, 53, None):
        got = verifier.score_pairs(
            emb, emb, torch.from_numpy(idx_a), torch.from_numpy(idx_b), chunk
        )
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert verifier.training  # the mode is left as it was
    matrix = verifier.score_matrix(emb[:3], emb[3:7], chunk_size=5)  # every shape, in blocks
    verifier.eval()
    with torch.no_grad():
        pairs = verifier.score(emb[:3].repeat_interleave(4, 0), emb[3:7].repeat(3, 1))
    torch.testing.assert_close(matrix, pairs.view(3, 4), atol=1e-5, rtol=1e-5)


def test_score_pairs_with_two_tables_and_score_matrix() -> None:
    torch.manual_seed(0)
    verifier = PairVerifier(12, hidden_size=8).eval()
    enrol, test = torch.randn(4, 12), torch.randn(6, 12)
    idx_a, idx_b = torch.tensor([0, 3, 3]), torch.tensor([5, 0, 2])
    got = verifier.score_pairs(enrol, test, idx_a, idx_b)
    torch.testing.assert_close(got, verifier.score(enrol[idx_a], test[idx_b]))
    matrix = verifier.score_matrix(enrol, test, chunk_size=7)  # blocks of one row
    assert matrix.shape == (4, 6)
    torch.testing.assert_close(matrix[3, 2], got[2])
    torch.testing.assert_close(matrix, verifier.score_matrix(enrol, test))
    assert verifier.score_matrix(enrol, test[:0]).shape == (4, 0)


def test_gathered_pair_chunks_reuses_buffers_and_checks_shapes() -> None:
    table = torch.arange(20.0).view(10, 2)
    idx_a, idx_b = torch.tensor([1, 2, 3, 4, 5]), torch.tensor([9, 8, 7, 6, 5])
    seen, pointers = [], set()
    for start, a, b in gathered_pair_chunks(table, table, idx_a, idx_b, chunk_size=2):
        seen.append((start, a[:, 0].tolist(), b[:, 0].tolist()))
        pointers.add(a.data_ptr())
    assert seen == [(0, [2.0, 4.0], [18.0, 16.0]), (2, [6.0, 8.0], [14.0, 12.0]),
                    (4, [10.0], [10.0])]  # fmt: skip
    assert len(pointers) == 1  # one buffer, refilled
    with pytest.raises(ValueError, match="index shapes differ"):
        next(gathered_pair_chunks(table, table, idx_a, idx_b[:3], 2))


def test_score_all_fuses_z_normalised_scores() -> None:
    torch.manual_seed(0)
    table, idx_a, idx_b = random_trials(20, 40, seed=2)
    verifier = PairVerifier(12, hidden_size=8).eval()
    scores = score_all(table, idx_a, idx_b, verifier)
    assert set(scores) == {"cosine", "learned", "fused"}
    np.testing.assert_allclose(scores["learned"], learned_scores(verifier, table, idx_a, idx_b))
    z = [(s - s.mean()) / s.std() for s in (scores["cosine"], scores["learned"])]
    np.testing.assert_allclose(scores["fused"], (z[0] + z[1]) / 2, atol=1e-5)
    np.testing.assert_allclose(fuse([scores["cosine"]]), z[0], atol=1e-5)
    assert set(score_all(table, idx_a, idx_b, None)) == {"cosine"}
