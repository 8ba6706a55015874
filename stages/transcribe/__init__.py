"""Transcribe the speech regions of a track with faster-whisper, on the track's own clock.

Only speech reaches the model. Whisper's encoder always works on a 30-s window, so a 2-s
region costs as much as a 30-s one: consecutive regions of a track are packed into windows of
up to ``max_window`` seconds, and a time map brings every word back to the track clock. The
windows of all tracks are decoded in batches, each window once (faster-whisper's batched
mode), which is about twice as fast as its one-window-at-a-time path.

Guards against Whisper's known failures: a window the model judges to be non-speech gives no
text; a window whose text loops or that the model is very unsure of is decoded again on the
careful path (one window at a time, with timestamps), and text that still loops is dropped
(a sentence said again in a turn of its own is not a loop);
a region the window heard only in part (a short utterance opening it that got no word, a
sentence said twice that it wrote once, half on each copy) is decoded again on its own; a word
whose time falls outside every region it was packed from is text the audio does not hold,
and is dropped; so is text over near-silence.
"""

from ._model import (
    check_model,
    load_model,
    model_folder,
    model_identity,
    resolve_model,
    usable_cores,
)
from ._options import BUNDLED_MODEL, ModelError, TranscribeOptions
from ._transcriber import TracksFailed, Transcriber, model_threads

__all__ = [
    "BUNDLED_MODEL",
    "ModelError",
    "TracksFailed",
    "TranscribeOptions",
    "Transcriber",
    "check_model",
    "load_model",
    "model_folder",
    "model_identity",
    "model_threads",
    "resolve_model",
    "usable_cores",
]
