"""Running e2espk's commands as cluster jobs through submitit (Slurm, or local processes).

- ``executors``: the resources of a job (``ClusterOptions``) and the submitit executor made from
  them, for a search's trials and for train.py's ``--slurm-*`` submission alike.
- ``slurm_checks``: the partition and GPUs asked for, checked against ``sinfo`` first; sbatch's
  refusals as one-line errors naming the flag.
- ``ranks``: a job of several tasks is one torch.distributed run: each task exports the env://
  variables from Slurm's (submitit's ``TorchDistributedEnvironment``) for
  ``e2espk.distributed.process_group``.
- ``tasks``: a job of several tasks seen as one: done, rank 0's result, the failed task named
  with its log.
- ``training_job``: train.py's run as a submitit ``Checkpointable``: requeued on preemption or
  time-out, it resumes the same run directory from its last checkpoint.
- ``follow``: ``--slurm-wait``: the job's state and the run's log until it ends.

Sits beside ``search`` (which uses it) and above ``training``; only ``cli`` and ``search`` import it.
"""
