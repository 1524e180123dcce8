"""Layer-wise hidden states of a pre-trained speech model (WavLM, HuBERT, wav2vec 2.0).

The model comes from a local directory or the local Hugging Face cache, never from the network.
Utterances run in length-sorted, padded batches with attention masks. Batched output equals each
utterance's own unpadded forward (up to float32 noise, well under the float16 storage rounding):

- the transformer ignores padded frames through the attention mask (and the positional
  convolution sees zeros there, as it does past the end of an unpadded input);
- base models (wav2vec2-base, HuBERT-base, WavLM-base(+)) normalise the first convolution's
  output per channel over *time* (GroupNorm with one group per channel), which would count
  the padding; that norm is swapped for one that takes its statistics over the valid frames.

Frame timing: the convolution stack has a 400-sample receptive field and a 320-sample hop, so
frame ``t`` covers samples ``[320 t, 320 t + 400)``: exactly Kaldi frame ``2 t`` at 100 Hz.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from e2espk.errors import ConfigError
from e2espk.extract.audio import SAMPLE_RATE
from e2espk.registry import Registry

LOG = logging.getLogger(__name__)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class MaskedInstanceNorm(nn.Module):
    """A per-channel GroupNorm whose statistics skip padded frames (``lengths`` set per batch)."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.norm = norm
        self.lengths: torch.Tensor | None = None  # (B,) valid frames of this layer's input

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        if self.lengths is None:
            return self.norm(x)
        mask = (torch.arange(x.shape[-1], device=x.device) < self.lengths[:, None]).to(x.dtype)
        mask = mask[:, None, :]  # (B, 1, T)
        count = mask.sum(-1, keepdim=True).clamp_min(1.0)
        mean = (x * mask).sum(-1, keepdim=True) / count
        var = (((x - mean) * mask) ** 2).sum(-1, keepdim=True) / count
        y = (x - mean) / torch.sqrt(var + self.norm.eps)
        if self.norm.affine:
            y = y * self.norm.weight[:, None] + self.norm.bias[:, None]
        return y * mask


@dataclasses.dataclass(frozen=True)
class Family:
    """How to batch one model family exactly: where its convolutional feature encoder is."""

    name: str
    encoder_attr: str = "feature_extractor"


PTM_FAMILIES: Registry[Family] = Registry("PTM model type")
for _name in ("wav2vec2", "hubert", "wavlm", "data2vec-audio"):
    PTM_FAMILIES.register(_name)(Family(_name))


@dataclasses.dataclass(frozen=True)
class PtmInfo:
    """What the stored states come from, recorded in the corpus file."""

    name: str
    path: str
    model_type: str
    sha256: str
    revision: str | None
    n_layers: int  # hidden states the model returns: transformer layers + 1
    hidden_size: int
    do_normalize: bool
    hop_samples: int
    receptive_field_samples: int

    @property
    def frame_rate_hz(self) -> float:
        return SAMPLE_RATE / self.hop_samples


def resolve_model_dir(model: str) -> Path:
    """A local model directory, or the snapshot of ``model`` in the local HF cache.

    Raises:
        ConfigError: when neither exists; e2espk never downloads a model.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"--ptm-model {model}: directory has no config.json")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:
        raise ConfigError(
            f"--ptm-model {model}: no such directory, and not in the local Hugging Face cache; "
            "e2espk never downloads models: fetch it first (e.g. `hf download MODEL`) or give "
            "its directory"
        ) from None


def weights_sha256(directory: Path) -> str:
    """SHA-256 of the weight files, so a corpus names exactly the weights it came from."""
    digest = hashlib.sha256()
    files = [directory / name for name in WEIGHT_FILES if (directory / name).is_file()]
    files = files or sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    if not files:
        raise ConfigError(f"--ptm-model {directory}: no weight file ({', '.join(WEIGHT_FILES)})")
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def conv_geometry(config: Any) -> tuple[int, int]:
    """(hop, receptive field) in samples of the convolutional feature encoder."""
    hop, field = 1, 1
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        field += (kernel - 1) * hop
        hop *= stride
    return hop, field


def plan_batches(lengths: Sequence[int], max_batch_samples: int) -> list[list[int]]:
    """Indices grouped longest first so padding stays small: a batch holds as many
    utterances as fit ``max_batch_samples`` padded samples (always at least one)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for index in order:
        if batches and lengths[batches[-1][0]] * (len(batches[-1]) + 1) <= max_batch_samples:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


class PtmRunner:
    """Loads a model once and returns float16 ``[frames, layers, dims]`` states per utterance.

    Args:
        model: a local directory or a model id already in the local HF cache.
        layers: indices into the model's hidden states (0 = after the feature projection /
            positional convolution, i = after transformer layer i); None keeps all.
        device: torch device to run on.
        dtype: of the returned arrays ("float16", as stored, or "float32").
    """

    def __init__(
        self,
        model: str,
        layers: list[int] | None,
        device: torch.device,
        dtype: str = "float16",
    ) -> None:
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        directory = resolve_model_dir(model)
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        family = PTM_FAMILIES.get(config.model_type)
        n_layers = config.num_hidden_layers + 1
        self.layers = list(range(n_layers)) if layers is None else list(layers)
        bad = [layer for layer in self.layers if not 0 <= layer < n_layers]
        if bad:
            raise ConfigError(
                f"--ptm-layers {bad} out of range: {directory} has hidden states 0-{n_layers - 1}"
            )
        hop, field = conv_geometry(config)
        self.info = PtmInfo(
            name=model.rstrip("/").split("/")[-1] if Path(model).is_dir() else model,
            path=str(directory.resolve()),
            model_type=config.model_type,
            sha256=weights_sha256(directory),
            revision=directory.name if directory.parent.name == "snapshots" else None,
            n_layers=n_layers,
            hidden_size=config.hidden_size,
            do_normalize=_do_normalize(directory),
            hop_samples=hop,
            receptive_field_samples=field,
        )
        self.device = device
        self.dtype = torch.float16 if dtype == "float16" else torch.float32
        self.model = AutoModel.from_pretrained(directory, local_files_only=True).eval().to(device)
        self._norms = self._mask_instance_norms(family)

    def _mask_instance_norms(self, family: Family) -> list[tuple[MaskedInstanceNorm, int, int]]:
        """Swap per-channel GroupNorms of the feature encoder; (norm, kernel, stride) of each."""
        encoder = getattr(self.model, family.encoder_attr)
        swapped = []
        config = self.model.config
        for index, layer in enumerate(encoder.conv_layers):
            norm = getattr(layer, "layer_norm", None)
            if isinstance(norm, nn.GroupNorm):
                if index != 0 or norm.num_groups != norm.num_channels:
                    raise ConfigError(
                        f"{self.info.path}: unsupported GroupNorm in conv layer {index}"
                    )
                layer.layer_norm = MaskedInstanceNorm(norm)
                swapped.append((layer.layer_norm, config.conv_kernel[0], config.conv_stride[0]))
        return swapped

    def frames(self, samples: int) -> int:
        """Output frames of an input of ``samples`` samples."""
        length = self.model._get_feat_extract_output_lengths(torch.tensor(samples))
        return max(int(length), 0)

    @torch.inference_mode()
    def __call__(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """States of one padded batch: (frames, len(layers), hidden) float16 per utterance."""
        lengths = [len(w) for w in wavs]
        batch = np.zeros((len(wavs), max(lengths)), np.float32)
        for row, wav in enumerate(wavs):
            batch[row, : len(wav)] = _normalized(wav) if self.info.do_normalize else wav
        inputs = torch.from_numpy(batch).to(self.device)
        mask = torch.zeros(inputs.shape, dtype=torch.long, device=self.device)
        for row, length in enumerate(lengths):
            mask[row, :length] = 1
        padded = min(lengths) < max(lengths)
        for norm, kernel, stride in self._norms:
            valid = [(n - kernel) // stride + 1 for n in lengths]
            norm.lengths = torch.tensor(valid, device=self.device) if padded else None
        try:
            with warnings.catch_warnings():  # torch on HF's boolean padding + float bias masks
                warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask.*")
                output = self.model(inputs, attention_mask=mask, output_hidden_states=True)
        finally:
            for norm, _, _ in self._norms:
                norm.lengths = None
        states = torch.stack([output.hidden_states[i] for i in self.layers], dim=2)  # (B,T,L,D)
        stored = states.to(self.dtype).cpu().numpy()
        return [stored[row, : self.frames(n)] for row, n in enumerate(lengths)]


def _normalized(wav: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per utterance, as HF's feature extractor's ``do_normalize``."""
    return ((wav - wav.mean()) / math.sqrt(float(wav.var()) + 1e-7)).astype(np.float32)


def _do_normalize(directory: Path) -> bool:
    """The model's own preprocessing: ``do_normalize`` of its preprocessor_config.json.

    Without the file the audio goes in as is (HF's base checkpoints, e.g. wavlm-base-plus,
    were trained on unnormalised audio; the large ones ship a config that says True)."""
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        LOG.warning("%s has no preprocessor_config.json: feeding unnormalised audio", directory)
        return False
    return bool(json.loads(path.read_text(encoding="utf-8")).get("do_normalize", False))
