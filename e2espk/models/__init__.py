"""Speaker embedding models: encoders, fusion, backbones, pooling, and the pair verifier.

Importing this package registers every backbone, fusion and pooling in its registry.
"""

from e2espk.models.backbones import BACKBONES, Backbone
from e2espk.models.config import ModelConfig, normalize_mode
from e2espk.models.encoders import HandcraftedEncoder, PtmEncoder
from e2espk.models.fusion import FUSIONS, Fusion, align_streams
from e2espk.models.pooling import POOLINGS, Pooling
from e2espk.models.speaker_model import SpeakerEmbeddingModel, build_speaker_model
from e2espk.models.verification import PairVerifier, VerifierConfig, build_pair_verifier

__all__ = [
    "BACKBONES",
    "FUSIONS",
    "POOLINGS",
    "Backbone",
    "Fusion",
    "HandcraftedEncoder",
    "ModelConfig",
    "PairVerifier",
    "Pooling",
    "PtmEncoder",
    "SpeakerEmbeddingModel",
    "VerifierConfig",
    "align_streams",
    "build_pair_verifier",
    "build_speaker_model",
    "normalize_mode",
]
