"""Voice families (base voices of espeak-ng, flite, festival) and the synthesis of one utterance.

A *family* is one base voice of one engine; a *speaker* is a family plus fixed perturbations
(:class:`Speaker`). The speaker's voice is made in two steps:

1. the engine renders the text (espeak-ng with the speaker's own ``-p`` pitch and ``-s`` rate);
2. Praat's "Change gender" (PSOLA, via parselmouth) applies the vocal-tract-length warp (formant
   shift ratio 0.88-1.15, done by resampling with pitch and duration corrected), the pitch median
   (a factor on the utterance's own median), the pitch range factor and the duration factor.

Session drift and per-utterance jitter (a few % of pitch and rate) come on top, so no two
utterances of a speaker are identical in voice, and sessions differ slightly as real ones do.
"""

from __future__ import annotations

import io
import logging
import subprocess
import tempfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import parselmouth
import soundfile as sf
import soxr
from parselmouth.praat import call

SR = 16000
log = logging.getLogger(__name__)

# espeak-ng variants (``espeak-ng --voices=variant``). Left out: non-human or degenerate ones
# (Demonic, UniRobot, anikaRobot, announcer, robosoft1-8, whisper, whisperf) and duplicates
# (fast == Mr, klatt == klatt6 == caleb: identical output).
# fmt: off
ESPEAK_VARIANTS = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Denis", "Diogo", "Gene", "Gene2",
    "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Mr", "Nguyen",
    "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm", "Tweaky", "adam", "anika", "antonio",
    "aunty", "belinda", "benjamin", "boris", "caleb", "croak", "david", "ed", "edward", "edward2",
    "f1", "f2", "f3", "f4", "f5", "grandma", "grandpa", "gustave", "iven", "iven2", "iven3",
    "iven4", "john", "kaukovalta", "klatt2", "klatt3", "klatt4", "klatt5", "linda", "m1", "m2",
    "m3", "m4", "m5", "m6", "m7", "m8", "marcelo", "max", "michel", "miguel", "norbert", "pablo",
    "paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby", "steph", "steph2", "steph3",
    "travis", "victor", "zac",
)

# Latin-script espeak-ng languages: they read English text with their own letter-to-sound rules
# (an accent). Test families draw from the second list only.
ESPEAK_LANGS_TRAIN = (
    "en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "de", "nl", "fr-fr", "es",
    "it", "pt", "sv", "da", "nb", "pl", "cs", "hu", "ro", "hr", "fi", "et", "lv", "lt", "sk", "sl",
    "id", "tr", "ca", "eu", "cy", "ga", "af", "sw", "eo", "is", "mt", "sq",
)
ESPEAK_LANGS_TEST = (
    "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbcwmd", "es-419", "pt-br", "fr-be", "bs", "ia", "lb",
)

# Non-espeak base voices. The same recorded person can exist in two engines (kal: flite kal,
# kal16 and festival kal_diphone; slt: flite slt and festival cmu_us_slt_arctic_hts): such
# voices are kept on the same side of the train/test split. The Hindi/Marathi/Telugu NSK voices
# crash festival on Latin text and are not used.
FLITE_TRAIN = ("kal", "kal16", "awb", "slt")
FLITE_TEST = ("rms",)
FESTIVAL_TRAIN = (
    "kal_diphone", "lp_diphone", "hy_fi_mv_diphone", "msu_ru_nsh_clunits", "upc_ca_ona_hts",
    "czech_dita", "czech_krb", "czech_ph", "cmu_us_slt_arctic_hts",
)
FESTIVAL_TEST = ("ked_diphone", "pc_diphone", "czech_machac", "suo_fi_lj_diphone")
# fmt: on


@dataclass(frozen=True)
class Family:
    """One base voice: ``engine`` in {espeak, flite, festival}; ``voice`` as the engine names it."""

    name: str
    engine: str
    voice: str


@dataclass(frozen=True)
class Speaker:
    """A family plus its fixed perturbations (all factors are multiplicative, 1 = unchanged)."""

    name: str
    family: str
    engine: str
    voice: str
    formant: float  # formant shift ratio (vocal-tract length warp), 0.88-1.15
    pitch: float  # pitch median factor (non-espeak; espeak uses espeak_pitch)
    prange: float  # pitch range factor
    rate: float  # duration factor (>1 slower; non-espeak; espeak uses espeak_speed)
    espeak_pitch: int  # espeak-ng -p, 0-99
    espeak_speed: int  # espeak-ng -s, words per minute

    def as_dict(self) -> dict:
        return asdict(self)


def espeak_family(variant: str, lang: str) -> Family:
    return Family(f"esp-{lang}-{variant}", "espeak", f"{lang}+{variant}")


def other_family(engine: str, voice: str) -> Family:
    short = voice.replace("_diphone", "").replace("_clunits", "").replace("_hts", "")
    short = short.replace("cmu_us_", "").replace("_arctic", "").replace("_", "")
    return Family(f"{engine[:3]}-{short}", engine, voice)


def draw_speaker(fam: Family, index: int, rng: np.random.Generator) -> Speaker:
    """Perturbations of speaker ``index`` of ``fam``: distinct but confusable within a family."""
    espeak = fam.engine == "espeak"
    return Speaker(
        name=f"{fam.name}-s{index}",
        family=fam.name,
        engine=fam.engine,
        voice=fam.voice,
        formant=float(np.exp(rng.uniform(np.log(0.88), np.log(1.15)))),
        pitch=1.0 if espeak else float(np.exp(rng.uniform(np.log(0.78), np.log(1.28)))),
        prange=float(rng.uniform(0.6, 1.5)),
        rate=1.0 if espeak else float(rng.uniform(0.87, 1.15)),
        espeak_pitch=int(rng.integers(25, 76)),
        espeak_speed=int(rng.integers(145, 196)),
    )


def _read_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return x[:, 0], sr


def render_many(spk: Speaker, texts: list[str], tmp: Path) -> list[tuple[np.ndarray, int]]:
    """Raw engine output (mono float32, engine rate) for each text.

    festival renders all texts in one process (its start-up costs ~0.2 s); espeak-ng and flite
    start in a few ms and run once per text.
    """
    if spk.engine == "espeak":
        out = []
        for text in texts:
            cmd = [
                "espeak-ng",
                "-v",
                spk.voice,
                "-p",
                str(spk.espeak_pitch),
                "-s",
                str(spk.espeak_speed),
                "--stdout",
                text,
            ]
            out.append(_read_wav_bytes(subprocess.run(cmd, capture_output=True, check=True).stdout))
        return out
    paths = [tmp / f"utt{i}.wav" for i in range(len(texts))]
    if spk.engine == "flite":
        for text, path in zip(texts, paths, strict=True):
            subprocess.run(
                ["flite", "-voice", spk.voice, "-t", text, "-o", str(path)],
                capture_output=True,
                check=True,
            )
    elif spk.engine == "festival":
        lines = [f"(voice_{spk.voice})"]
        for text, path in zip(texts, paths, strict=True):
            safe = text.replace('"', "").replace("\\", "")
            lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{safe}")) "{path}" \'riff)')
        scm = tmp / "utts.scm"
        scm.write_text("\n".join(lines) + "\n")
        subprocess.run(["festival", "-b", str(scm)], capture_output=True, check=True)
    else:
        raise ValueError(f"unknown engine {spk.engine!r}; known: espeak, flite, festival")
    return [_read_wav_bytes(p.read_bytes()) for p in paths]


def _trim(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cut engine silences to a random 50-300 ms margin each side (threshold: -40 dB of peak)."""
    env = np.abs(x) > 0.01 * (np.abs(x).max() + 1e-9)
    idx = np.flatnonzero(env)
    if len(idx) == 0:
        return x
    a = max(0, idx[0] - int(rng.uniform(0.05, 0.3) * SR))
    b = min(len(x), idx[-1] + int(rng.uniform(0.05, 0.3) * SR))
    return x[a:b]


def synthesize_speaker(
    spk: Speaker, texts: list[str], jitters: list[tuple[float, float]], rng: np.random.Generator
) -> list[np.ndarray]:
    """All utterances of one speaker: engine rendering, then :func:`perturb` each."""
    with tempfile.TemporaryDirectory(prefix="devbench-") as tmp:
        raws = render_many(spk, texts, Path(tmp))
    return [perturb(spk, raw, sr, j, rng) for (raw, sr), j in zip(raws, jitters, strict=True)]


def seed_praat(name: str, samples: np.ndarray, jitter: tuple[float, float]) -> None:
    """Seed Praat's own random generator from the utterance's inputs.

    Praat's PSOLA ("Change gender") draws from a process-wide generator that Praat seeds from
    the clock, so without this two builds differ in ~20 % of utterance durations. The seed is
    derived from the inputs rather than drawn from the build's ``rng``, so the rest of the
    build's random stream (trim margins, channels) is unchanged, whatever the job order.
    """
    digest = zlib.crc32(samples.tobytes(), zlib.crc32(f"{name}|{jitter!r}".encode()))
    parselmouth.praat.run(f"random_initializeWithSeedUnsafelyButPredictably ({digest})")


def perturb(
    spk: Speaker,
    raw: np.ndarray,
    sr: int,
    jitter: tuple[float, float],
    rng: np.random.Generator,
    max_seconds: float = 6.5,
) -> np.ndarray:
    """Speaker-perturbed clean speech at 16 kHz (float32, peak-normalised to 0.5).

    ``jitter`` = (pitch factor, rate factor) of this session and utterance on top of the
    speaker's own. Praat's Change gender needs the utterance's pitch median: it is measured
    first and multiplied by the speaker's and the jitter's pitch factors.
    """
    x = soxr.resample(raw, sr, SR).astype(np.float64) if sr != SR else raw.astype(np.float64)
    seed_praat(spk.name, x, jitter)
    snd = parselmouth.Sound(x, SR)
    median = call(snd.to_pitch(0.01, 60.0, 500.0), "Get quantile", 0, 0, 0.5, "Hertz")
    if not np.isfinite(median) or median <= 0:
        median = 120.0
    target = float(np.clip(median * spk.pitch * jitter[0], 55.0, 450.0))
    try:
        warped = call(
            snd, "Change gender", 60.0, 500.0, spk.formant, target, spk.prange, spk.rate * jitter[1]
        )
    except parselmouth.PraatError:
        # rare: Praat finds no usable pitch period somewhere (--undefined--); keep the
        # speaker's formant ratio and rate, leave the pitch contour as rendered
        log.warning("Change gender failed for %s; retrying without pitch change", spk.name)
        try:
            warped = call(
                snd, "Change gender", 60, 500, spk.formant, 0.0, 1.0, spk.rate * jitter[1]
            )
        except parselmouth.PraatError:
            log.warning("Change gender failed again for %s; utterance left unwarped", spk.name)
            warped = snd
    y = _trim(warped.values[0].astype(np.float32), rng)
    y = y[: int(max_seconds * SR)]
    return (0.5 * y / (np.abs(y).max() + 1e-9)).astype(np.float32)
