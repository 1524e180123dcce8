"""Learned verification distance: a network scoring whether two embeddings share a speaker.

Following end-to-end speaker verification with a learned distance (Monteiro et al.), the
verifier is trained on same/different pairs mined from each batch next to (or instead of) a
margin classification loss, and scores trials directly at test time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from e2espk.errors import ConfigError
from e2espk.models.config import config_from_dict
from e2espk.registry import Registry

# Symmetric functions of a pair of embeddings that the verifier's heads read. "product" and
# "absdiff" say how the two relate; "sum" also says where the pair sits in embedding space,
# which lets the heads learn rules for regions of the training speakers.
# Each takes ``out`` to write into a scoring buffer (no autograd there); without it, it is a
# plain differentiable expression.
PairFeature = Callable[..., Tensor]
PAIR_FEATURES: Registry[PairFeature] = Registry("verifier pair feature")


@PAIR_FEATURES.register("product")
def _product(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    return a * b if out is None else torch.mul(a, b, out=out)


@PAIR_FEATURES.register("absdiff")
def _absdiff(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    return (a - b).abs() if out is None else torch.sub(a, b, out=out).abs_()


@PAIR_FEATURES.register("sum")
def _sum(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    return a + b if out is None else torch.add(a, b, out=out)


@PAIR_FEATURES.register("sqdiff")
def _sqdiff(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    return (a - b).square() if out is None else torch.sub(a, b, out=out).square_()


DEFAULT_PAIR_FEATURES = ("product", "absdiff", "sum")


@dataclass
class VerifierConfig:
    """Architecture of the pair verifier (saved with checkpoints next to ModelConfig)."""

    hidden_size: int = 256  # width of each head's hidden layers
    n_hidden: int = 2  # hidden layers per head (0: a linear head)
    dropout: float = 0.0  # dropout after each hidden layer
    rproj_size: int = 0  # >0: fixed random projection of both embeddings to this size first
    ndiscriminators: int = 1  # independent heads; scores average their logits
    normalize: bool = False  # L2-normalise embeddings before anything else
    seed: int = 0  # seed of the random projection (the buffer is saved in state_dict anyway)
    features: tuple[str, ...] = DEFAULT_PAIR_FEATURES  # PAIR_FEATURES the heads read

    def __post_init__(self) -> None:
        self.features = tuple(self.features)  # YAML and checkpoints give lists

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for checkpoints and YAML."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerifierConfig:
        """Inverse of ``to_dict``; unknown keys raise a ConfigError listing the valid ones."""
        return config_from_dict(cls, data)


def _head(in_dim: int, hidden: int, n_hidden: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(n_hidden):
        layers += [nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = hidden
    layers.append(nn.Linear(in_dim, 1))
    return nn.Sequential(*layers)


class PairVerifier(nn.Module):
    """Scores pairs of embeddings; symmetric by construction.

    The pair features (``PAIR_FEATURES``, default ``[a * b, |a - b|, a + b]``) are each
    symmetric in (a, b), so ``forward(a, b) == forward(b, a)`` exactly, whatever the weights.

    Args:
        embedding_dim: E, the embedding size.
        hidden_size, n_hidden, dropout: each head's MLP.
        rproj_size: if > 0, both embeddings are first multiplied by a fixed Gaussian matrix
            ``(E, rproj_size)``; it is a buffer, so no optimizer ever updates it, and it is saved
            in ``state_dict``.
        ndiscriminators: independent heads (separate parameters) trained on the same pairs.
        normalize: L2-normalise embeddings first (makes scores independent of the norm).
        seed: seed for the random projection.
        features: names of the pair features, concatenated in this order.
    """

    rproj: Tensor | None

    def __init__(
        self,
        embedding_dim: int,
        hidden_size: int = 256,
        n_hidden: int = 2,
        dropout: float = 0.0,
        rproj_size: int = 0,
        ndiscriminators: int = 1,
        normalize: bool = False,
        seed: int = 0,
        features: tuple[str, ...] | list[str] = DEFAULT_PAIR_FEATURES,
    ) -> None:
        super().__init__()
        if ndiscriminators < 1:
            raise ConfigError(f"ndiscriminators must be >= 1, got {ndiscriminators}")
        if rproj_size < 0 or n_hidden < 0 or hidden_size < 1:
            raise ConfigError(
                "verifier sizes must be rproj_size >= 0, n_hidden >= 0, hidden_size >= 1; got "
                f"{rproj_size}, {n_hidden}, {hidden_size}"
            )
        if not features or len(set(features)) != len(features):
            raise ConfigError(
                f"verifier features must be distinct and not empty, got {list(features)}"
            )
        self.pair_features = [PAIR_FEATURES.get(name) for name in features]
        self.embedding_dim = embedding_dim
        self.normalize = normalize
        if rproj_size > 0:
            generator = torch.Generator().manual_seed(seed)
            matrix = torch.randn(embedding_dim, rproj_size, generator=generator)
            self.register_buffer("rproj", matrix / rproj_size**0.5)
        else:
            self.rproj = None
        feature_dim = len(self.pair_features) * (rproj_size or embedding_dim)
        self.heads = nn.ModuleList(
            _head(feature_dim, hidden_size, n_hidden, dropout) for _ in range(ndiscriminators)
        )

    @classmethod
    def from_config(cls, config: VerifierConfig, embedding_dim: int) -> PairVerifier:
        """Build from a VerifierConfig (e.g. ``VerifierConfig.from_dict(ckpt[...])``)."""
        return cls(embedding_dim, **config.to_dict())

    @property
    def ndiscriminators(self) -> int:
        """Number of independent heads."""
        return len(self.heads)

    def _prepare(self, emb: Tensor) -> Tensor:
        if self.normalize:
            emb = F.normalize(emb, dim=-1)
        return emb if self.rproj is None else emb @ self.rproj

    def forward(self, emb_a: Tensor, emb_b: Tensor) -> Tensor:
        """``(N, E), (N, E)`` -> ``(N, ndiscriminators)`` logits of P(same speaker)."""
        a, b = self._prepare(emb_a), self._prepare(emb_b)
        features = torch.cat([pair(a, b) for pair in self.pair_features], dim=-1)
        return torch.cat([head(features) for head in self.heads], dim=-1)

    def score(self, emb_a: Tensor, emb_b: Tensor) -> Tensor:
        """``(N,)`` trial scores: the heads' logits averaged (logits, not probabilities, so
        confident trials do not saturate to tied scores of 1.0)."""
        return self.forward(emb_a, emb_b).mean(dim=-1)

    @torch.no_grad()
    def score_pairs(
        self,
        emb_a: Tensor,
        emb_b: Tensor,
        idx_a: Tensor,
        idx_b: Tensor,
        chunk_size: int | None = None,
    ) -> Tensor:
        """Scores of trials ``(emb_a[idx_a[k]], emb_b[idx_b[k]])``, batched, as ``(K,)``.

        ``emb_a`` and ``emb_b`` may be the same table (e.g. all extracted embeddings, trials as
        row indices); they are moved to the verifier's device. Normalisation and the random
        projection run once per table row, not per trial; each chunk of pairs is gathered into
        reused buffers and run through the heads with in-place ops (dropout never applies), so
        the scores equal ``score()`` on the pairs while memory stays at ``chunk_size`` pairs.
        The default chunk (1024 on CPU) keeps the buffers in the CPU cache:
        ``benchmarks/bench_scoring.py``.
        """
        table_a, table_b = self._prepare_tables(emb_a, emb_b)
        return self._score_prepared(table_a, table_b, idx_a, idx_b, chunk_size)

    @torch.no_grad()
    def score_matrix(self, emb_a: Tensor, emb_b: Tensor, chunk_size: int = 65536) -> Tensor:
        """``(N, E), (M, E)`` -> ``(N, M)`` scores of every pair (e.g. enrolment x test)."""
        table_a, table_b = self._prepare_tables(emb_a, emb_b)
        n, m = table_a.shape[0], table_b.shape[0]
        rows_per_block = max(1, chunk_size // max(m, 1))
        columns = torch.arange(m, device=table_b.device)
        blocks = []
        for start in range(0, n, rows_per_block):
            rows = torch.arange(start, min(n, start + rows_per_block), device=table_a.device)
            idx_a, idx_b = rows.repeat_interleave(m), columns.repeat(rows.numel())
            scores = self._score_prepared(table_a, table_b, idx_a, idx_b, None)
            blocks.append(scores.view(rows.numel(), m))
        return torch.cat(blocks) if blocks else table_a.new_zeros(0, m)

    def _prepare_tables(self, emb_a: Tensor, emb_b: Tensor) -> tuple[Tensor, Tensor]:
        """Both tables on the weights' device and dtype, normalised and projected once."""
        weight = next(self.parameters())
        table_a = self._prepare(emb_a.to(weight.device, weight.dtype))
        if emb_b is emb_a:
            return table_a, table_a
        return table_a, self._prepare(emb_b.to(weight.device, weight.dtype))

    def _score_prepared(
        self,
        table_a: Tensor,
        table_b: Tensor,
        idx_a: Tensor,
        idx_b: Tensor,
        chunk_size: int | None,
    ) -> Tensor:
        chunk = chunk_size or (1024 if table_a.device.type == "cpu" else 65536)
        out = table_a.new_empty(idx_a.numel())
        features = table_a.new_empty(chunk, len(self.pair_features) * table_a.shape[1])
        hidden = self._hidden_buffers(chunk, table_a)
        for start, a, b in gathered_pair_chunks(table_a, table_b, idx_a, idx_b, chunk):
            n, dim = a.shape
            feats = features[:n]
            for k, pair in enumerate(self.pair_features):
                pair(a, b, out=feats[:, k * dim : (k + 1) * dim])
            scores = out[start : start + n].zero_()
            for head in self.heads:
                scores.add_(_run_head_into(head, feats, hidden))
            scores.div_(len(self.heads))
        return out

    def _hidden_buffers(self, chunk: int, like: Tensor) -> list[Tensor]:
        """Two flat buffers big enough for the widest hidden layer of any head."""
        widths = [layer.out_features for head in self.heads for layer in _linears(head)[:-1]]
        return [like.new_empty(chunk * max(widths, default=1)) for _ in range(2)]


def _linears(head: nn.Module) -> list[nn.Linear]:
    """A head's Linear layers in order (each hidden one is followed by ReLU and dropout)."""
    return [m for m in head.modules() if isinstance(m, nn.Linear)]


def _run_head_into(head: nn.Module, features: Tensor, hidden: list[Tensor]) -> Tensor:
    """One head on ``features`` (n, F) without autograd or fresh allocations: each hidden
    Linear+ReLU writes into one of the two flat ping-pong ``hidden`` buffers. Returns (n,)
    logits."""
    linears = _linears(head)
    x = features
    for k, layer in enumerate(linears[:-1]):
        buffer = hidden[k % 2][: x.shape[0] * layer.out_features].view(x.shape[0], -1)
        x = torch.addmm(layer.bias, x, layer.weight.t(), out=buffer).relu_()
    last = linears[-1]
    return torch.addmv(last.bias, x, last.weight[0])


def gathered_pair_chunks(
    table_a: Tensor, table_b: Tensor, idx_a: Tensor, idx_b: Tensor, chunk_size: int
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """``(start, table_a[idx_a[chunk]], table_b[idx_b[chunk]])`` for consecutive chunks of
    trial pairs, gathered into two buffers reused across chunks (so the rows stay in the CPU
    cache and no memory is allocated per chunk). The yielded tensors are overwritten by the
    next chunk: use them before asking for it."""
    if idx_a.shape != idx_b.shape or idx_a.dim() != 1:
        raise ValueError(f"index shapes differ: {tuple(idx_a.shape)} vs {tuple(idx_b.shape)}")
    idx_a = idx_a.to(device=table_a.device, dtype=torch.long)
    idx_b = idx_b.to(device=table_b.device, dtype=torch.long)
    size = min(chunk_size, idx_a.numel())
    buffer_a = table_a.new_empty(size, table_a.shape[1])
    buffer_b = table_b.new_empty(size, table_b.shape[1])
    for start in range(0, idx_a.numel(), chunk_size):
        stop = min(start + chunk_size, idx_a.numel())
        a = torch.index_select(table_a, 0, idx_a[start:stop], out=buffer_a[: stop - start])
        b = torch.index_select(table_b, 0, idx_b[start:stop], out=buffer_b[: stop - start])
        yield start, a, b


def build_pair_verifier(config: VerifierConfig, embedding_dim: int) -> PairVerifier:
    """Build the verifier from its config and the embedding size of the speaker model."""
    return PairVerifier.from_config(config, embedding_dim)
