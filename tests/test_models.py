"""Speaker model, its parts and the pair verifier, on tiny shapes (L=3, D=16, F=9)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import Tensor

from e2espk.errors import ConfigError, InputDataError
from e2espk.models import (
    BACKBONES,
    FUSIONS,
    POOLINGS,
    ModelConfig,
    PairVerifier,
    PtmEncoder,
    VerifierConfig,
    align_streams,
    build_pair_verifier,
    build_speaker_model,
    normalize_mode,
)
from e2espk.models.fusion import GatingFusion

L, D, F, B = 3, 16, 9, 4
T_PTM, T_HC = 20, 41  # 0.40 s at 50 Hz, 0.41 s at 100 Hz: not an exact multiple
TINY_BACKBONES = [name for name in BACKBONES.names() if name.endswith("_tiny")]
# (mode, fusion, extra config) covering every fusion and its options
STREAM_CASES = [
    ("ptm", "concat", {}),
    ("handcrafted", "concat", {}),
    ("fusion", "concat", {}),
    ("fusion", "cross_attention", {"fusion_direction": "ptm_to_hc"}),
    ("fusion", "cross_attention", {"fusion_direction": "both"}),
    ("fusion", "gating", {"gate_granularity": "frame"}),
    ("fusion", "gating", {"gate_granularity": "channel"}),
]


def tiny_config(**overrides: object) -> ModelConfig:
    values: dict[str, object] = {
        "mode": "fusion",
        "ptm_layers": L,
        "ptm_dim": D,
        "handcrafted_dim": F,
        "hidden_size": 16,
        "latent_size": 8,
        "attention_heads": 2,
        "backbone": "ecapa_tdnn_tiny",
    }
    values.update(overrides)
    return ModelConfig(**values)  # type: ignore[arg-type]


def tiny_batch(
    config: ModelConfig, t_ptm: int = T_PTM, t_hc: int = T_HC, seed: int = 0
) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batch = {}
    if config.uses_ptm:
        shape = (B, L, D) if config.ptm_pooled else (B, t_ptm, L, D)
        batch["ptm"] = torch.randn(shape, generator=gen)
    if config.uses_handcrafted:
        batch["handcrafted"] = torch.randn(B, t_hc, F, generator=gen)
    return batch


def train_steps(config: ModelConfig, steps: int = 4) -> list[float]:
    """A few Adam steps regressing the embeddings of a fixed batch onto fixed targets."""
    torch.manual_seed(0)
    model = build_speaker_model(config)
    batch = tiny_batch(config)
    target = torch.randn(B, config.latent_size, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for step in range(steps):
        emb = model(batch)
        assert emb.shape == (B, config.latent_size)
        assert torch.isfinite(emb).all()
        loss = (emb - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        if step == 0:  # every part of the model is used and gets a finite gradient
            for name, param in model.named_parameters():
                assert param.grad is not None, f"{name} got no gradient"
                assert torch.isfinite(param.grad).all(), name
        optimizer.step()
        losses.append(loss.item())
    changed = [
        not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True)
    ]
    assert all(changed)
    return losses


# --- the full model ------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize(("mode", "fusion", "extra"), STREAM_CASES)
def test_every_mode_fusion_backbone_trains(
    mode: str, fusion: str, extra: dict[str, object], backbone: str
) -> None:
    losses = train_steps(tiny_config(mode=mode, fusion=fusion, backbone=backbone, **extra))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    ("mode", "fusion", "backbone", "pooling"),
    [
        # T = 1 all the way: attention over one frame gets no gradient, so pool by the mean
        ("ptm", "concat", "pooled_mlp_tiny", "mean"),
        ("fusion", "concat", "pooled_mlp_tiny", "attentive_stats"),
        ("fusion", "gating", "pooled_mlp_tiny", "stats"),
        ("fusion", "concat", "ecapa_tdnn_tiny", "attentive_stats"),  # PTM broadcast over frames
    ],
)
def test_pooled_ptm_trains(mode: str, fusion: str, backbone: str, pooling: str) -> None:
    config = tiny_config(
        mode=mode, fusion=fusion, backbone=backbone, pooling=pooling, ptm_pooled=True
    )
    losses = train_steps(config)
    assert losses[-1] < losses[0]


def test_pooled_ptm_only_gives_one_frame(caplog: pytest.LogCaptureFixture) -> None:
    config = tiny_config(mode="ptm", backbone="pooled_mlp_tiny", ptm_pooled=True)
    model = build_speaker_model(config).eval()
    assert model.frames(tiny_batch(config)).shape == (B, 16, 1)
    assert "pooled PTM has a single frame: 'attentive_stats' pooling" in caplog.text


@pytest.mark.parametrize("pooling", POOLINGS.names())
def test_every_pooling_trains(pooling: str) -> None:
    losses = train_steps(tiny_config(pooling=pooling, backbone="tdnn_tiny"))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(
    ("t_ptm", "t_hc"), [(20, 40), (20, 41), (20, 39), (21, 40), (1, 3), (2, 1)]
)
def test_fusion_tolerates_off_by_one_lengths(t_ptm: int, t_hc: int) -> None:
    config = tiny_config(fusion="gating", backbone="tdnn_tiny")
    model = build_speaker_model(config).eval()
    emb = model(tiny_batch(config, t_ptm=t_ptm, t_hc=t_hc))
    assert emb.shape == (B, 8)
    assert isinstance(model.fusion, GatingFusion) and model.fusion.last_gate is not None
    expected = t_hc if t_ptm == 1 else t_ptm  # a single PTM frame is broadcast like pooled PTM
    assert model.fusion.last_gate.shape[-1] == expected


def test_streams_covering_different_durations_fail() -> None:
    config = tiny_config()
    model = build_speaker_model(config)
    with pytest.raises(InputDataError, match=r"ptm covers 0.40 s.*handcrafted covers 0.80 s"):
        model(tiny_batch(config, t_ptm=20, t_hc=80))
    relaxed = build_speaker_model(tiny_config(max_duration_mismatch=None)).eval()
    assert relaxed(tiny_batch(config, t_ptm=20, t_hc=80)).shape == (B, 8)


def test_logging_hooks() -> None:
    gating = build_speaker_model(tiny_config(fusion="gating"))
    assert gating.gate_statistics() is None  # no forward pass yet
    gating(tiny_batch(gating.config))
    stats = gating.gate_statistics()
    assert stats is not None and set(stats) == {"mean", "std", "min", "max"}
    assert 0.0 < stats["min"] <= stats["mean"] <= stats["max"] < 1.0
    weights = gating.ptm_layer_weights()
    assert weights is not None and torch.allclose(weights, torch.full((L,), 1 / L))

    handcrafted = build_speaker_model(tiny_config(mode="handcrafted"))
    assert handcrafted.ptm_layer_weights() is None
    assert handcrafted.gate_statistics() is None
    assert build_speaker_model(tiny_config(fusion="concat")).gate_statistics() is None


def test_rebuild_from_config_dict_reproduces_outputs() -> None:
    config = tiny_config(fusion="cross_attention", fusion_direction="both")
    model = build_speaker_model(config).eval()
    saved = json.loads(json.dumps(config.to_dict()))  # what a checkpoint would hold
    clone = build_speaker_model(ModelConfig.from_dict(saved)).eval()
    clone.load_state_dict(model.state_dict())
    batch = tiny_batch(config)
    assert torch.equal(model(batch), clone(batch))


# --- parts -----------------------------------------------------------------------------------


def test_every_backbone_has_a_tiny_variant() -> None:
    full = [name for name in BACKBONES.names() if not name.endswith("_tiny")]
    assert {"ecapa_tdnn", "tdnn", "resnet", "pooled_mlp"} <= set(full)
    for name in full:
        assert f"{name}_tiny" in BACKBONES


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
@pytest.mark.parametrize("length", [1, 7, 40])
def test_backbone_out_dim_matches_output(backbone: str, length: int) -> None:
    net = BACKBONES.build(backbone, in_dim=12).eval()
    out = net(torch.randn(2, 12, length))
    assert out.dim() == 3 and out.shape[:2] == (2, net.out_dim)


def test_full_size_backbones_follow_the_papers() -> None:
    ecapa = BACKBONES.build("ecapa", in_dim=80)
    assert ecapa.out_dim == 1536  # MFA: 3 x 512 channels
    dilations = [block.body[1].convs[0][0].dilation[0] for block in ecapa.blocks]
    assert dilations == [2, 3, 4]
    assert len(ecapa.blocks[0].body[1].convs) == 7  # scale 8
    assert BACKBONES.build("xvector", in_dim=80).out_dim == 1536
    assert BACKBONES.build("resnet34", in_dim=80).out_dim == 256 * 10  # 8w x ceil(80 / 8)
    assert BACKBONES.build("resnet", in_dim=80, channels=16).out_dim == 128 * 10
    ecapa.eval()
    assert ecapa(torch.randn(1, 80, 30)).shape == (1, 1536, 30)


@pytest.mark.parametrize("pooling", POOLINGS.names())
@pytest.mark.parametrize("length", [1, 13])
def test_pooling_shapes(pooling: str, length: int) -> None:
    pool = POOLINGS.build(pooling, in_dim=6).eval()
    out = pool(torch.randn(3, 6, length))
    assert out.shape == (3, pool.out_dim) and torch.isfinite(out).all()


def test_stats_pooling_is_mean_and_std() -> None:
    x = torch.randn(2, 5, 11)
    out = POOLINGS.build("stats", in_dim=5)(x)
    expected = torch.cat([x.mean(-1), x.std(-1, unbiased=False)], dim=1)
    assert torch.allclose(out, expected, atol=1e-5)


def test_ptm_encoder_shapes_and_layer_weights() -> None:
    encoder = PtmEncoder(L, D, out_dim=10)
    assert encoder(torch.randn(B, 7, L, D)).shape == (B, 10, 7)
    assert encoder(torch.randn(B, L, D)).shape == (B, 10, 1)
    assert torch.allclose(encoder.layer_weights(), torch.full((L,), 1 / L))
    with torch.no_grad():
        encoder.layer_logits.copy_(torch.tensor([0.0, 0.0, 50.0]))
    x = torch.randn(2, 5, L, D)
    only_last = PtmEncoder(1, D, out_dim=10)
    only_last.load_state_dict({**encoder.state_dict(), "layer_logits": torch.zeros(1)})
    assert torch.allclose(encoder(x), only_last(x[:, :, 2:]), atol=1e-5)
    instance = PtmEncoder(L, D, out_dim=10, norm="instance")
    assert instance(torch.randn(B, 7, L, D)).shape == (B, 10, 7)


def test_align_streams() -> None:
    ptm, hc = torch.randn(2, 4, 20), torch.randn(2, 3, 41)
    p, h = align_streams(ptm, hc)
    assert p.shape == (2, 4, 20) and h.shape == (2, 3, 20)
    exact = torch.arange(8.0).view(1, 1, 8)
    assert torch.equal(
        align_streams(torch.zeros(1, 1, 4), exact)[1], exact.view(1, 1, 4, 2).mean(-1)
    )
    pooled, frames = align_streams(torch.randn(2, 4, 1), hc)
    assert pooled.shape == (2, 4, 41) and torch.equal(pooled[..., 0], pooled[..., -1])
    assert frames is hc


@pytest.mark.parametrize(("granularity", "gate_channels"), [("frame", 1), ("channel", 6)])
def test_gate_granularity(granularity: str, gate_channels: int) -> None:
    fusion = GatingFusion(6, 6, 6, granularity=granularity)
    out = fusion(torch.randn(2, 6, 10), torch.randn(2, 6, 20))
    assert out.shape == (2, 6, 10)
    assert fusion.last_gate is not None and fusion.last_gate.shape == (2, gate_channels, 10)
    assert not fusion.last_gate.requires_grad


# --- configuration -------------------------------------------------------------------------


def test_mode_aliases() -> None:
    assert [normalize_mode(m) for m in ("1", "2", "3", 3, "PTM")] == [
        "ptm",
        "handcrafted",
        "fusion",
        "fusion",
        "ptm",
    ]
    assert tiny_config(mode="2").mode == "handcrafted"
    with pytest.raises(ConfigError, match=r"unknown mode '4'.*ptm \(1\), handcrafted \(2\)"):
        tiny_config(mode="4")


def test_config_round_trip() -> None:
    config = tiny_config(fusion="gating", gate_granularity="channel", ptm_pooled=True)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["fusion"] == "gating"


def test_from_dict_rejects_unknown_keys() -> None:
    data = {**tiny_config().to_dict(), "latnet_size": 3}
    with pytest.raises(ConfigError, match=r"unknown ModelConfig key\(s\): latnet_size") as err:
        ModelConfig.from_dict(data)
    assert "valid keys:" in str(err.value) and "latent_size" in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backbone": "ecapa_tnn"}, r"unknown backbone 'ecapa_tnn'; choose one of: .*ecapa_tdnn"),
        ({"pooling": "max"}, r"unknown pooling 'max'; choose one of: .*attentive_stats"),
        ({"fusion": "sum"}, r"unknown fusion 'sum'; choose one of: concat, cross_attention"),
        ({"handcrafted_dim": None}, r"mode 'fusion' reads handcrafted .* handcrafted_dim is unset"),
        ({"mode": "ptm", "ptm_dim": None}, r"mode 'ptm' reads PTM features but ptm_dim is unset"),
        ({"ptm_layers": 0}, r"ptm_layers must be a positive integer, got 0"),
        (
            {"fusion": "cross_attention", "ptm_pooled": True},
            r"'cross_attention' needs PTM frames.*ptm_pooled=True",
        ),
        (
            {"fusion": "cross_attention", "attention_heads": 3},
            r"attention_heads \(3\) must divide hidden_size \(16\)",
        ),
        ({"fusion_direction": "hc_to_ptm"}, r"fusion_direction must be one of: ptm_to_hc, both"),
        ({"gate_granularity": "utterance"}, r"gate_granularity must be one of: frame, channel"),
        ({"ptm_norm": "instance", "ptm_pooled": True}, r"ptm_norm='instance' normalises over"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"handcrafted_rate_hz": 0}, r"handcrafted_rate_hz must be a positive frame rate"),
        ({"ptm_rate_hz": None}, r"ptm_rate_hz must be a positive frame rate in Hz, got None"),
        ({"backbone_channels": -4}, r"backbone_channels must be a positive integer or None"),
        ({"max_duration_mismatch": 2.0}, r"max_duration_mismatch must be in \(0, 1\]"),
    ],
)
def test_bad_configs_raise(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_config(**overrides).validate()
    with pytest.raises(ConfigError, match=message):
        build_speaker_model(tiny_config(**overrides))


def test_bad_batches_raise() -> None:
    model = build_speaker_model(tiny_config())
    batch = tiny_batch(model.config)
    with pytest.raises(ConfigError, match=r"needs batch\['handcrafted'\].* only has: ptm"):
        model({"ptm": batch["ptm"]})
    with pytest.raises(ConfigError, match=r"needs batch\['ptm'\].*only has: nothing"):
        build_speaker_model(tiny_config(mode="ptm"))({})
    with pytest.raises(ConfigError, match=r"ptm_pooled=False expects frames \(B, T, L, D\)"):
        model({**batch, "ptm": batch["ptm"].mean(1)})
    with pytest.raises(ConfigError, match=r"expects \(B, T, 3, 16\)"):
        model({**batch, "ptm": torch.randn(B, T_PTM, 4, D)})
    with pytest.raises(ConfigError, match=r"expects \(B, T, 9\)"):
        model({**batch, "handcrafted": torch.randn(B, T_HC, F + 1)})


def test_ecapa_channels_must_divide_scale() -> None:
    with pytest.raises(ConfigError, match=r"channels \(18\) must be divisible by scale \(4\)"):
        build_speaker_model(tiny_config(backbone_channels=18))


def test_fusion_registry_names() -> None:
    assert FUSIONS.names() == ["concat", "cross_attention", "gating"]


# --- pair verifier ---------------------------------------------------------------------------


def test_verifier_is_exactly_symmetric() -> None:
    torch.manual_seed(0)
    verifier = PairVerifier(12, hidden_size=16, n_hidden=2, rproj_size=7, ndiscriminators=3)
    a, b = torch.randn(50, 12), torch.randn(50, 12)
    assert verifier(a, b).shape == (50, 3)
    assert torch.equal(verifier(a, b), verifier(b, a))
    assert torch.equal(verifier.score(a, b), verifier.score(b, a))
    assert torch.equal(verifier.score(a, b), verifier(a, b).mean(dim=1))


def test_random_projection_is_frozen_and_saved() -> None:
    verifier = PairVerifier(12, hidden_size=16, rproj_size=5, ndiscriminators=2)
    assert verifier.rproj is not None
    projection = verifier.rproj.clone()
    assert "rproj" in verifier.state_dict()
    assert all(param is not verifier.rproj for param in verifier.parameters())
    optimizer = torch.optim.Adam(verifier.parameters(), lr=0.1)
    for _ in range(5):
        loss = verifier(torch.randn(8, 12), torch.randn(8, 12)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(verifier.rproj, projection)
    other = PairVerifier(12, hidden_size=16, rproj_size=5, ndiscriminators=2, seed=1)
    assert other.rproj is not None and not torch.equal(other.rproj, projection)
    other.load_state_dict(verifier.state_dict())
    assert torch.equal(other.rproj, projection)


def test_verifier_heads_are_independent() -> None:
    verifier = PairVerifier(6, hidden_size=8, n_hidden=1, ndiscriminators=3)
    pointers = [{p.data_ptr() for p in head.parameters()} for head in verifier.heads]
    assert all(pointers[i].isdisjoint(pointers[j]) for i in range(3) for j in range(i + 1, 3))
    logits = verifier(torch.randn(4, 6), torch.randn(4, 6))
    assert not torch.equal(logits[:, 0], logits[:, 1])  # different initialisations
    logits[:, 0].sum().backward()  # only head 0 gets gradients
    assert all(p.grad is not None for p in verifier.heads[0].parameters())
    assert all(p.grad is None or not p.grad.any() for p in verifier.heads[1].parameters())


def test_vectorised_scoring_matches_pairwise() -> None:
    torch.manual_seed(0)
    verifier = PairVerifier(6, hidden_size=8, ndiscriminators=2).eval()
    table = torch.randn(10, 6)
    idx_a, idx_b = torch.tensor([0, 3, 9, 4]), torch.tensor([1, 3, 2, 8])
    scores = verifier.score_pairs(table, table, idx_a, idx_b, chunk_size=3)
    single = torch.stack(
        [
            verifier.score(table[i : i + 1], table[j : j + 1])[0]
            for i, j in zip(idx_a, idx_b, strict=True)
        ]
    )
    assert torch.allclose(scores, single, atol=1e-6)
    enrol, test = torch.randn(3, 6), torch.randn(5, 6)
    matrix = verifier.score_matrix(enrol, test, chunk_size=4)
    assert matrix.shape == (3, 5)
    assert torch.allclose(matrix[2, 4], verifier.score(enrol[2:3], test[4:5])[0], atol=1e-6)
    assert torch.allclose(matrix, verifier.score_matrix(enrol, test), atol=1e-6)


def test_verifier_config_round_trip_and_errors() -> None:
    config = VerifierConfig(hidden_size=8, rproj_size=4, ndiscriminators=2)
    assert VerifierConfig.from_dict(config.to_dict()) == config
    verifier = build_pair_verifier(config, embedding_dim=6)
    assert verifier.ndiscriminators == 2 and verifier.rproj is not None
    with pytest.raises(ConfigError, match=r"unknown VerifierConfig key\(s\): heads; valid keys"):
        VerifierConfig.from_dict({"heads": 2})
    with pytest.raises(ConfigError, match=r"ndiscriminators must be >= 1"):
        build_pair_verifier(dataclasses.replace(config, ndiscriminators=0), 6)
