"""Feature extraction from audio into an e2espk corpus: decoding and resampling (``audio``),
handcrafted streams (``handcrafted``), PTM hidden states (``ptm``) and the pipeline that writes
the corpus (``pipeline``); ``--slurm-array`` runs it as a Slurm job array of shards (``shards``,
``array``) joined into the same corpus (``join``). Its heavy dependencies are the ``extract`` extra.

Frame timing, 16 kHz audio of ``n`` samples (all windows start at sample 0, no padding):

========  ======  ====================================  ==============================
stream    rate    frame ``i`` covers samples             frames
========  ======  ====================================  ==============================
mfbe      100 Hz  ``[160 i, 160 i + 400)``               ``1 + (n - 400) // 160``
mfcc      100 Hz  same                                   same
pitch     100 Hz  Praat F0 at the centre ``160 i + 200``  same
ptm       50 Hz   ``[320 i, 320 i + 400)``               ``1 + (n - 400) // 320``
========  ======  ====================================  ==============================

So PTM frame ``i`` and handcrafted frame ``2 i`` share the same window and the same start time
``i / 50`` s, which is how the loader aligns its crops (frame ``int(t * rate)`` starts at
``t``). When a corpus has both kinds, the handcrafted streams are cut to ``2 x`` the PTM frames
(and PTM to ``handcrafted // 2``), so every stream of an utterance spans the same time.
"""
