"""Using a trained system: load a checkpoint, embed utterances, score pairs.

eval, embed, training's validation and exports, and the benchmarks all go through this layer;
it imports nothing from ``e2espk.training`` (training depends on it, not the reverse).
"""
