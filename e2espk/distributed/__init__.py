"""Training with several ranks under ``torchrun`` (torch.distributed; nothing of our own).

- ``process_group``: the process group from torchrun's env:// variables (NCCL on CUDA, one
  device per local rank; gloo on the CPU), the rank's place (``DistContext``), object
  broadcast and gather.
- ``sharding``: each rank's slice of the global batch, the global batch gathered back with
  gradients, validation utterances sharded and gathered.
- ``replicas``: DDP around the speaker model and the training-only modules; ``sync_batchnorm``
  for ``--sync-bn`` (also on the CPU).
- ``consistency``: ranks started with different options or corpora are refused.
- ``options``: the ``distributed`` part of TrainConfig (``--sync-bn``, ``--dist-timeout-seconds``).

Nothing here imports training: the trainer decides what runs on which rank.
"""
