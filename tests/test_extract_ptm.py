"""PTM hidden states: padded batches equal each utterance's own forward, for every stored layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
import torch

from e2espk.errors import ConfigError
from e2espk.extract.ptm import PtmRunner, conv_geometry, plan_batches
from tests.extract_support import tiny_ptm

# float16 storage rounds to half a unit in the last place: |x16 - x| <= 2**-11 |x|. Batched
# float32 states differ from unbatched ones by float32 noise (~1e-6), the absolute term.
HALF_ULP = 2.0**-11
F32_NOISE = 1e-5
LENGTHS = (16000, 12345, 8000, 4000, 401)  # samples; 401 = one frame


def reference_states(directory: Path, wav: np.ndarray, do_normalize: bool = False) -> np.ndarray:
    """The model's own forward on one unpadded utterance: (frames, layers, dims) float32."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(directory).eval()
    x = torch.from_numpy(wav)[None]
    if do_normalize:
        x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
    with torch.no_grad():
        states = model(x, output_hidden_states=True).hidden_states
    return torch.stack(states, dim=2)[0].numpy()


@pytest.mark.parametrize(
    "family, extra",
    [
        ("wavlm", {}),  # GroupNorm encoder, as wavlm-base-plus
        ("hubert", {}),  # GroupNorm encoder, as hubert-base
        ("wav2vec2", {}),  # LayerNorm encoder, stable layer norm, as wav2vec2-large-lv60
    ],
)
def test_batched_padded_states_equal_unbatched_forward(
    tmp_path: Path, family: str, extra: dict
) -> None:
    directory = tiny_ptm(tmp_path / family, family, **extra)
    runner = PtmRunner(str(directory), None, torch.device("cpu"))
    rng = np.random.default_rng(0)
    wavs = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in LENGTHS]
    batched = runner(wavs)  # one padded batch, longest first padding the others
    for wav, states in zip(wavs, batched, strict=True):
        reference = reference_states(directory, wav)
        assert states.dtype == np.float16
        assert states.shape == reference.shape == (1 + (len(wav) - 400) // 320, 4, 32)
        error = np.abs(states.astype(np.float32) - reference)
        assert (error <= HALF_ULP * np.abs(reference) + F32_NOISE).all(), (family, len(wav))


def test_group_norm_masking_is_needed(tmp_path: Path) -> None:
    """Without the masked norm, padding changes a base model's states far beyond float16."""
    directory = tiny_ptm(tmp_path / "wavlm", "wavlm")
    runner = PtmRunner(str(directory), None, torch.device("cpu"))
    for norm, _, _ in runner._norms:
        norm.forward = norm.norm.forward  # type: ignore[method-assign]
    wavs = [np.ones(16000, np.float32) * 0.1, (0.1 * np.sin(np.arange(4000))).astype(np.float32)]
    short = runner(wavs)[1]
    reference = reference_states(directory, wavs[1])
    assert np.abs(short.astype(np.float32) - reference).max() > 0.05


def test_selected_layers_and_preprocessing_follow_the_model_dir(tmp_path: Path) -> None:
    directory = tiny_ptm(tmp_path / "w2v", "wav2vec2")
    (directory / "preprocessor_config.json").write_text('{"do_normalize": true}')
    runner = PtmRunner(str(directory), [0, 3], torch.device("cpu"), dtype="float32")
    assert runner.info.do_normalize and runner.info.n_layers == 4
    assert (runner.info.hop_samples, runner.info.receptive_field_samples) == (320, 400)
    wavs = [np.full(8000, 0.5, np.float32) + 0.1 * np.sin(np.arange(8000, dtype=np.float32)),
            np.linspace(-0.2, 0.3, 5000, dtype=np.float32)]  # fmt: skip
    for wav, states in zip(wavs, runner(wavs), strict=True):
        reference = reference_states(directory, wav, do_normalize=True)[:, [0, 3]]
        assert states.dtype == np.float32
        assert np.abs(states - reference).max() < F32_NOISE


def test_a_model_id_is_found_in_the_local_hf_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-wavlm"
    tiny_ptm(repo / "snapshots" / revision, "wavlm")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a network call would fail the test
    runner = PtmRunner("acme/tiny-wavlm", [0, 1], torch.device("cpu"))
    assert (runner.info.name, runner.info.revision) == ("acme/tiny-wavlm", revision)


def test_a_missing_model_is_a_clear_error_and_never_a_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    for missing in (str(tmp_path / "nowhere"), "microsoft/wavlm-base-plus"):
        with pytest.raises(ConfigError, match="never downloads"):
            PtmRunner(missing, None, torch.device("cpu"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no config\.json"):
        PtmRunner(str(tmp_path / "empty"), None, torch.device("cpu"))


def test_out_of_range_layers_name_the_valid_range(tmp_path: Path) -> None:
    directory = tiny_ptm(tmp_path / "hubert", "hubert")
    with pytest.raises(ConfigError, match="0-3"):
        PtmRunner(str(directory), [0, 12], torch.device("cpu"))


def test_batches_are_length_sorted_and_fit_the_budget() -> None:
    lengths = [5, 30, 10, 30, 12, 1, 29]
    batches = plan_batches(lengths, 60)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or lengths[batch[0]] * len(batch) <= 60
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    assert plan_batches([100], 10) == [[0]]


def test_conv_geometry_of_the_standard_encoder() -> None:
    class Config:
        conv_kernel = (10, 3, 3, 3, 3, 2, 2)
        conv_stride = (5, 2, 2, 2, 2, 2, 2)

    assert conv_geometry(Config()) == (320, 400)


def changed_frames(compute, wav: np.ndarray, sample: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Indices of the frames that change when one sample changes."""
    bumped = wav.copy()
    bumped[sample] += 0.5
    return np.flatnonzero(
        np.abs(compute(bumped) - compute(wav)).reshape(len(compute(wav)), -1).max(1) > 0
    )


def test_ptm_frame_i_covers_the_window_of_handcrafted_frame_2i(tmp_path: Path) -> None:
    """The documented timing, observed: PTM frame i reads samples [320 i, 320 i + 400) (the
    convolutional encoder, LayerNorm variant: no norm over time), Kaldi frame j reads
    [160 j, 160 j + 400)."""
    from e2espk.extract.handcrafted import log_mel

    runner = PtmRunner(str(tiny_ptm(tmp_path / "w2v", "wav2vec2")), None, torch.device("cpu"))

    def encoder(wav: np.ndarray) -> np.ndarray:  # (frames, channels)
        with torch.no_grad():
            return runner.model.feature_extractor(torch.from_numpy(wav)[None])[0].T.numpy()

    wav = (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
    for i in (3, 10):
        first, last = 320 * i, 320 * i + 399
        assert i in changed_frames(encoder, wav, first) and i in changed_frames(encoder, wav, last)
        assert i not in changed_frames(encoder, wav, first - 1)
        assert i not in changed_frames(encoder, wav, last + 1)
        j = 2 * i  # the handcrafted frame with the same window
        assert j in changed_frames(log_mel, wav, first) and j in changed_frames(log_mel, wav, last)
        assert j not in changed_frames(log_mel, wav, first - 1)
        assert j not in changed_frames(log_mel, wav, last + 1)
