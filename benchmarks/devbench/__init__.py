"""devbench: a reproducible real-audio dev benchmark for speaker verification on unseen speakers.

Why synthetic voices: the project needs audio that anyone can regenerate bit-for-bit from
Debian and PyPI packages, with enough speakers and a true held-out-family test. Speech
synthesisers provide the "people"; recording channels, not the synthesiser, make it hard.

Design
------
- Voice family = one base voice of one engine: an espeak-ng variant on one language
  (``en-us+f3``), a flite voice (``slt``), a festival voice (``kal_diphone``,
  ``cmu_us_slt_arctic_hts``, ``msu_ru_nsh_clunits``, ...).
- Speaker = family + fixed perturbations: espeak-ng ``-p``/``-s`` (pitch, rate), then Praat's
  "Change gender" (parselmouth): formant shift 0.88-1.15 (vocal-tract length), pitch median,
  pitch range 0.6-1.5, duration. Sessions drift by a few %, utterances jitter on top
  (:mod:`.voices`).
- Splits (:mod:`.plan`): train and valid share families (valid = extra speakers of 7 training
  families); test families (held-out espeak-ng variants on held-out languages, flite ``rms``,
  festival ``ked``, ``pc``, ``czech_machac``, ``suo_fi_lj``) never occur in train/valid. Same
  recorded person in two engines (kal, slt) stays on one side.
- Sessions (3-4 per speaker) each draw one channel from one distribution (:mod:`.channel`):
  reverb, white/pink/brown/babble noise at 5-30 dB SNR, EQ, telephone/low-pass band limits,
  gain, mu-law and clipping.
- Features (:mod:`.features`) at 100 Hz on one frame grid: Kaldi fbank-80 and hires MFCC-40
  (kaldi-native-fbank), Praat pitch [log F0, voicing], resemblyzer VoiceEncoder LSTM layer
  outputs ``[frames, 3, 256]``. Packed with the project's own ``data_prep``.
- Trials (:mod:`.trials`): all same-speaker pairs; 2x as many same-family and 3x as many
  other-family non-targets.

Install (Debian 12)::

    apt-get update && apt-get install -y espeak-ng flite festival wamerican \\
      festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-italp16k festvox-itapc16k \\
      festvox-ru festvox-czech-dita festvox-czech-krb festvox-czech-machac festvox-czech-ph \\
      festvox-suopuhe-lj festvox-suopuhe-mv festvox-ca-ona-hts
    pip install soxr soundfile kaldi-native-fbank praat-parselmouth scipy tqdm
    pip install --no-deps resemblyzer   # its librosa/numba pins clash with numpy 2; not needed

Build: ``python benchmarks/devbench/build.py --out DIR [--jobs 2] [--small] [--seed 0]``.
See ``benchmarks/devbench/README.md`` for counts, timings and the sanity EERs.
"""
