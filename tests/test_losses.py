"""Margin heads, pair mining, the pairwise verifier loss and the joint loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from e2espk.errors import ConfigError
from e2espk.losses import MARGIN_HEADS, JointLoss, mine_pairs, pair_loss
from e2espk.models import PairVerifier


def constant_verifier(*biases: float) -> PairVerifier:
    """A verifier whose heads output the constant logits ``biases`` whatever the pair."""
    verifier = PairVerifier(4, n_hidden=0, ndiscriminators=len(biases))
    with torch.no_grad():
        for head, bias in zip(verifier.heads, biases, strict=True):
            head[-1].weight.zero_()  # type: ignore[index]
            head[-1].bias.fill_(bias)  # type: ignore[index]
    return verifier


def pairs_of(idx_a: Tensor, idx_b: Tensor) -> list[tuple[int, int]]:
    return list(zip(idx_a.tolist(), idx_b.tolist(), strict=True))


# --- pair mining -----------------------------------------------------------------------------


def test_mine_pairs_hand_checked() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2])
    idx_a, idx_b, same = mine_pairs(labels, generator=torch.Generator().manual_seed(0))
    assert same.dtype == torch.bool and same.tolist() == [True, True, False, False]
    assert pairs_of(idx_a[same], idx_b[same]) == [(0, 1), (2, 3)]
    different = pairs_of(idx_a[~same], idx_b[~same])
    assert len(set(different)) == 2
    for i, j in different:
        assert i < j and labels[i] != labels[j]


def test_mine_pairs_unbalanced_keeps_every_pair() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2])
    idx_a, idx_b, same = mine_pairs(labels, balance=False)
    assert same.sum() == 2 and (~same).sum() == 8  # 10 pairs in all
    assert sorted(pairs_of(idx_a, idx_b)) == [(i, j) for i in range(5) for j in range(i + 1, 5)]


def test_mine_pairs_with_few_different_pairs_takes_all() -> None:
    idx_a, idx_b, same = mine_pairs(torch.tensor([0, 0, 0, 0, 1]))
    assert same.sum() == 6 and (~same).sum() == 4
    assert sorted(pairs_of(idx_a[~same], idx_b[~same])) == [(0, 4), (1, 4), (2, 4), (3, 4)]


def test_mine_pairs_is_reproducible_and_handles_no_pairs() -> None:
    labels = torch.arange(12) // 3
    first = mine_pairs(labels, generator=torch.Generator().manual_seed(5))
    again = mine_pairs(labels, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    idx_a, _, same = mine_pairs(torch.tensor([0, 1, 2]))
    assert idx_a.numel() == 0 and same.numel() == 0


# --- pair loss -------------------------------------------------------------------------------


def test_pair_loss_hand_computed() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2])
    emb = torch.randn(5, 4, requires_grad=True)
    loss, stats = pair_loss(constant_verifier(0.0), emb, labels)
    assert loss.item() == pytest.approx(math.log(2.0))
    expected = {"pair_loss": math.log(2), "pairs": 4, "same_pairs": 2, "pair_accuracy": 0.5}
    assert stats == pytest.approx(expected)  # logit 0 means "different": right on half

    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    # Two heads with constant logits b: half the pairs are same -> softplus(-b), half softplus(b).
    loss, stats = pair_loss(constant_verifier(1.0, -3.0), emb, labels)
    per_head = [(softplus(-b) + softplus(b)) / 2 for b in (1.0, -3.0)]
    assert loss.item() == pytest.approx(sum(per_head) / 2, rel=1e-6)
    assert stats["pair_accuracy"] == 0.5  # mean logit -1 says "different" for every pair


def test_pair_loss_matches_bce_on_mined_pairs() -> None:
    torch.manual_seed(0)
    verifier = PairVerifier(6, hidden_size=8, ndiscriminators=2)
    emb, labels = torch.randn(12, 6, requires_grad=True), torch.arange(12) % 4
    loss, stats = pair_loss(verifier, emb, labels, generator=torch.Generator().manual_seed(3))
    idx_a, idx_b, same = mine_pairs(labels, generator=torch.Generator().manual_seed(3))
    logits = verifier(emb[idx_a], emb[idx_b])
    target = same.float()[:, None].expand(-1, 2)
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(logits, target))
    assert stats["pairs"] == same.numel() == 24 and stats["same_pairs"] == 12
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_pair_loss_without_pairs_is_zero_and_differentiable() -> None:
    emb = torch.randn(3, 4, requires_grad=True)
    loss, stats = pair_loss(constant_verifier(0.0), emb, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0 and stats["pairs"] == 0
    loss.backward()


# --- margin heads ----------------------------------------------------------------------------


def unit_head(name: str, **kwargs: float) -> torch.nn.Module:
    """A 2-class head in 2-D whose class weights are the unit axes."""
    head = MARGIN_HEADS.build(name, embedding_dim=2, n_classes=2, **kwargs)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
    return head


def at_angle(theta: float) -> Tensor:
    return torch.tensor([[math.cos(theta), math.sin(theta)]]) * 3.0  # the norm does not matter


def test_zero_margin_heads_equal_scaled_cosine_softmax() -> None:
    torch.manual_seed(0)
    emb, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 0, 1])
    aam = MARGIN_HEADS.build("aam_softmax", embedding_dim=5, n_classes=4, margin=0.0, scale=30)
    am = MARGIN_HEADS.build("am_softmax", embedding_dim=5, n_classes=4, margin=0.0, scale=30)
    am.load_state_dict(aam.state_dict())
    expected = 30 * F.normalize(emb, dim=1) @ F.normalize(aam.weight, dim=1).T
    (aam_loss, aam_logits), (am_loss, am_logits) = aam(emb, labels), am(emb, labels)
    assert torch.allclose(aam_logits, expected, atol=1e-5)
    assert torch.allclose(am_logits, expected, atol=1e-5)
    assert torch.allclose(aam_loss, F.cross_entropy(expected, labels), atol=1e-5)
    assert torch.allclose(am_loss, aam_loss, atol=1e-5)


def test_aam_target_logit_is_s_cos_theta_plus_m() -> None:
    head = unit_head("aam_softmax")  # defaults m = 0.2, s = 30
    _, logits = head(at_angle(0.5), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(30 * math.cos(0.5 + 0.2), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(30 * math.cos(math.pi / 2 - 0.5), abs=1e-4)


def test_aam_beyond_pi_uses_the_monotonic_fallback() -> None:
    head = unit_head("aam_softmax", margin=0.2, scale=30)
    _, logits = head(at_angle(3.0), torch.tensor([0]))  # θ + m = 3.2 > π
    expected = 30 * (math.cos(3.0) - math.sin(math.pi - 0.2) * 0.2)
    assert logits[0, 0].item() == pytest.approx(expected, abs=1e-4)
    easy = unit_head("arcface", margin=0.2, scale=30, easy_margin=True)
    _, logits = easy(at_angle(2.0), torch.tensor([0]))  # cos θ < 0: no margin
    assert logits[0, 0].item() == pytest.approx(30 * math.cos(2.0), abs=1e-4)


def test_am_target_logit_is_s_cos_theta_minus_m() -> None:
    head = unit_head("cosface", margin=0.3, scale=10)
    _, logits = head(at_angle(0.5), torch.tensor([1]))
    assert logits[0, 1].item() == pytest.approx(10 * (math.cos(math.pi / 2 - 0.5) - 0.3), abs=1e-4)
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(0.5), abs=1e-4)


@pytest.mark.parametrize("name", ["softmax", "am_softmax", "aam_softmax"])
def test_label_smoothing_follows_cross_entropy(name: str) -> None:
    torch.manual_seed(0)
    emb, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 0, 1])
    plain = MARGIN_HEADS.build(name, embedding_dim=5, n_classes=4)
    smooth = MARGIN_HEADS.build(name, embedding_dim=5, n_classes=4, label_smoothing=0.1)
    smooth.load_state_dict(plain.state_dict())
    (loss, logits), (smooth_loss, smooth_logits) = plain(emb, labels), smooth(emb, labels)
    assert torch.equal(logits, smooth_logits)
    assert torch.allclose(smooth_loss, F.cross_entropy(logits, labels, label_smoothing=0.1))
    assert not torch.allclose(loss, smooth_loss)


def test_softmax_head_is_a_linear_classifier() -> None:
    head = MARGIN_HEADS.build("softmax", embedding_dim=5, n_classes=3, margin=0.2, scale=30)
    emb = torch.randn(4, 5)
    _, logits = head(emb, torch.tensor([0, 1, 2, 0]))
    assert torch.allclose(logits, emb @ head.weight.T + head.bias)


def test_margin_can_be_scheduled_and_registry_errors() -> None:
    head = unit_head("aam_softmax", margin=0.0)
    head.set_margin(0.2)  # type: ignore[operator]
    _, logits = head(at_angle(0.5), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(30 * math.cos(0.7), abs=1e-4)
    with pytest.raises(ConfigError, match=r"unknown margin head 'arc'; choose one of: aam_softmax"):
        MARGIN_HEADS.build("arc", embedding_dim=2, n_classes=2)
    with pytest.raises(ConfigError, match=r"at least 2 speakers"):
        MARGIN_HEADS.build("softmax", embedding_dim=2, n_classes=1)


# --- joint loss ------------------------------------------------------------------------------


class ExplodingVerifier(PairVerifier):
    def forward(self, emb_a: Tensor, emb_b: Tensor) -> Tensor:
        raise AssertionError("the pair term should not be computed")


def test_joint_loss_is_the_weighted_sum() -> None:
    torch.manual_seed(0)
    emb, labels = torch.randn(8, 6, requires_grad=True), torch.arange(8) % 4
    head = MARGIN_HEADS.build("aam_softmax", embedding_dim=6, n_classes=4)
    verifier = PairVerifier(6, hidden_size=8)
    joint = JointLoss(head, verifier, margin_weight=0.5, pair_weight=2.0)
    total, stats = joint(emb, labels, generator=torch.Generator().manual_seed(1))
    margin, _ = head(emb, labels)
    pairs, _ = pair_loss(verifier, emb, labels, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(total, 0.5 * margin + 2.0 * pairs)
    assert {"loss", "margin_loss", "accuracy", "pair_loss", "pair_accuracy"} <= set(stats)
    total.backward()
    assert emb.grad is not None and head.weight.grad is not None


def test_joint_loss_skips_terms_with_zero_weight() -> None:
    emb, labels = torch.randn(8, 6), torch.arange(8) % 4
    head = MARGIN_HEADS.build("softmax", embedding_dim=6, n_classes=4)
    total, stats = JointLoss(head, ExplodingVerifier(6), 1.0, 0.0)(emb, labels)
    assert torch.allclose(total, head(emb, labels)[0]) and "pair_loss" not in stats
    total, stats = JointLoss(None, constant_verifier(0.0), 0.0, 1.0)(torch.randn(8, 4), labels)
    assert total.item() == pytest.approx(math.log(2)) and "margin_loss" not in stats


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ((0.0, 0.0), r"not both 0"),
        ((-1.0, 1.0), r"must be >= 0"),
        ((1.0, 1.0), r"pair_weight > 0 needs a pair verifier"),
    ],
)
def test_joint_loss_bad_weights(weights: tuple[float, float], message: str) -> None:
    head = MARGIN_HEADS.build("softmax", embedding_dim=6, n_classes=4)
    with pytest.raises(ConfigError, match=message):
        JointLoss(head, None, *weights)
    if weights == (1.0, 1.0):
        with pytest.raises(ConfigError, match=r"margin_weight > 0 needs a margin head"):
            JointLoss(None, PairVerifier(6), *weights)
