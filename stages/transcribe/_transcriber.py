"""The transcriber: windows of every track decoded in batches, checked, and made segments."""

import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
from faster_whisper import BatchedInferencePipeline
from faster_whisper.transcribe import Word as ModelWord

from models import SAMPLE_RATE, PcmAudio, Segment, SpeechRegion, Word, in_this_context

from ._model import (
    load_model,
    model_files,
    one_thread_math,
    one_thread_math_here,
    quiet_faster_whisper,
    usable_cores,
)
from ._options import ModelError, TranscribeOptions
from ._windows import Decoded, Piece, Window, bare, clip, cost, midpoint, pack, words_by_piece
from ._words import (
    MORE_WORDS,
    anchor,
    carried,
    compression_ratio,
    heard_in_part,
    passed_over,
    span_level_db,
    split_phrases,
    spoken,
    unrepeated_text,
)

log = logging.getLogger(f"trackscribe.{__name__}")


class TracksFailed(Exception):
    """Some tracks could not be transcribed; every other track was, and was reported done.

    Batches never mix tracks, so a failure is one track's own: ``failures`` maps each failed
    track's index to what went wrong, and ``results`` holds every track's segments as
    :meth:`Transcriber.transcribe_tracks` would return them (a failed track's: empty).
    """

    def __init__(self, failures: dict[int, Exception], results: list[list[Segment]]) -> None:
        super().__init__("; ".join(f"track {i}: {error}" for i, error in failures.items()))
        self.failures = failures
        self.results = results


def model_threads(options: TranscribeOptions) -> int:
    """CTranslate2 threads for each of the ``options.parallel`` model workers: as asked, else
    the usable cores shared out among them (one at least). Public, so that what is measured
    against the pipeline (``trackscribe bench``) can be given the same threads in all."""
    return options.cpu_threads or max(1, usable_cores() // options.parallel)


class Transcriber:
    """Holds the loaded model; transcribes the speech regions of one track or of many."""

    def __init__(self, options: TranscribeOptions | None = None) -> None:
        self.options = options or TranscribeOptions()
        o = self.options
        cores = usable_cores()
        threads = model_threads(o)
        if threads * o.parallel > 2 * cores:
            # Nothing fails: it only runs many times slower (1,024 threads on 2 cores: 44x).
            log.warning(
                "%d model threads (%d x %d) on %d cores: many times slower than %d; "
                "cpu_threads 0 shares the cores out",
                threads * o.parallel,
                o.parallel,
                threads,
                cores,
                cores,
            )
        quiet_faster_whisper()
        self._model = load_model(o.model, o.device, o.compute_type, threads, o.parallel)
        if o.language not in (None, "en") and not self._model.model.is_multilingual:
            # faster-whisper would decode in English, warn once per batch, and the provenance
            # would name the language asked for.
            raise ModelError(
                f"model {o.model!r} knows English only: language {o.language!r} needs a "
                "multilingual model (such as small, not small.en)"
            )
        self.model_files = model_files(o.model)
        """File name -> SHA-256 of the loaded model's files."""

    def transcribe(
        self, audio: PcmAudio, regions: Sequence[SpeechRegion], *, with_dropped: bool = False
    ) -> list[Segment]:
        """Segments for ``regions`` of ``audio``, in track time, each inside one region; with
        ``with_dropped``, also those left out (``Segment.dropped`` says why)."""
        try:
            return self.transcribe_tracks([(audio, regions)], with_dropped=with_dropped)[0]
        except TracksFailed as failed:
            raise failed.failures[0] from None

    def transcribe_tracks(
        self,
        tracks: Sequence[tuple[PcmAudio, Sequence[SpeechRegion]]],
        on_progress: Callable[[float], None] | None = None,
        on_track_done: Callable[[int, list[Segment]], None] | None = None,
        *,
        with_dropped: bool = False,
    ) -> list[list[Segment]]:
        """Segments for each ``(audio, regions)`` pair, in order; with ``with_dropped``, also
        the text left out as the model's own (over near-silence), marked ``dropped``, so that
        a transcript can account for it.

        Batched decoding of whole windows is about twice as fast as one window after another.
        Each track's windows are dealt round-robin into batches of at most ``batch_size``;
        batches never mix tracks, so a track's result depends on that track alone (decoded
        with other tracks or by itself, after a crash, it comes out the same: results can be
        kept per track). ``parallel`` batches run at once, track after track, the costliest
        track first (so tracks are finished one by one, not all at the end), and a batch's audio
        is read only when it starts, so memory holds ``parallel`` batches at most.
        ``on_progress`` is called with the seconds of speech each window held, as it is done;
        ``on_track_done`` with a track's index and segments as soon as all of it is done.
        A track that fails costs the others nothing: they are finished and reported, its
        batches not yet started are skipped, and :class:`TracksFailed` then says which failed
        and why.
        """
        o = self.options
        packed = [
            pack(i, audio, regions, o.max_window) for i, (audio, regions) in enumerate(tracks)
        ]
        batches: list[list[Window]] = []
        pending = [0] * len(tracks)
        # The costliest track first, so that no worker is left running a long one alone at
        # the end while the others have nothing to do (a host who talks most may be the last
        # track); a track's batches stay together, so tracks are still finished (and kept)
        # one by one, not all at the end.
        for index in sorted(range(len(tracks)), key=lambda i: cost(packed[i]), reverse=True):
            windows = packed[index]
            count = math.ceil(len(windows) / o.batch_size)
            batches += [windows[i::count] for i in range(count)]
            pending[index] = count
        results: list[list[Segment]] = [[] for _ in tracks]

        failures: dict[int, Exception] = {}

        def finish(index: int) -> None:
            results[index].sort(key=lambda s: s.start)
            if not with_dropped:
                results[index] = [s for s in results[index] if s.dropped is None]
            if on_track_done is not None:
                try:
                    on_track_done(index, results[index])
                except Exception as exc:  # keeping it failed (a full disk): that track's loss
                    failures[index] = exc

        def run(batch: list[Window]) -> list[tuple[Window, list[Segment]]]:
            if batch[0].track in failures:
                return []  # its track has failed already: the rest of it is of no use
            return self._run_batch(batch, tracks)

        for index, count in enumerate(pending):
            if count == 0:
                finish(index)  # nothing to send: done at once
        with (
            one_thread_math(),
            ThreadPoolExecutor(
                o.parallel, thread_name_prefix="transcribe", initializer=one_thread_math_here
            ) as pool,
        ):
            futures = {
                pool.submit(in_this_context(run), batch): batch[0].track for batch in batches
            }
            try:
                for future in as_completed(futures):
                    track = futures[future]
                    try:
                        done = future.result()
                    except Exception as exc:
                        failures.setdefault(track, exc)
                    if track in failures:
                        continue
                    for window, segments in done:
                        results[track].extend(segments)
                        if on_progress is not None:
                            on_progress(window.duration)
                    pending[track] -= 1
                    if pending[track] == 0:
                        finish(track)
            except BaseException:
                # Ctrl-C (or a callback that failed): only the batches already on the model
                # are waited for, not every one still queued, which on a long meeting is minutes.
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        if failures:
            for index in failures:
                results[index] = []
            raise TracksFailed(failures, results)
        return results

    def _run_batch(
        self, batch: list[Window], tracks: Sequence[tuple[PcmAudio, Sequence[SpeechRegion]]]
    ) -> list[tuple[Window, list[Segment]]]:
        samples = [w.read(tracks[w.track][0]) for w in batch]
        done = []
        for window, audio, decoded in zip(batch, samples, self._decode_batch(samples), strict=True):
            careful = self._unreliable(decoded, window) or passed_over(window, decoded)
            if careful:
                # In one pass without timestamps, batched decoding may loop, or stop at a
                # junction between pieces; the careful path, 30-s segment by segment, does not.
                decoded = self._decode_one(audio)
            # After either path: the careful one too writes a sentence said twice only once.
            if decoded is not None and (
                partial := heard_in_part(window, decoded, opening=not careful)
            ):
                decoded = self._with_pieces_alone(decoded, window, audio, partial)
            source = tracks[window.track][0].source.name
            done.append((window, self._segments(window, decoded, audio, source)))
        return done

    def _decode_batch(self, samples: Sequence[np.ndarray]) -> list[Decoded | None]:
        """One result per window (None: the model heard no speech)."""
        o = self.options
        clips, offset = [], 0.0
        for chunk in samples:
            clips.append({"start": offset, "end": offset + chunk.size / SAMPLE_RATE})
            offset += chunk.size / SAMPLE_RATE
        # A pipeline object per call: it keeps per-call state, and batches run in parallel.
        raw_segments, _ = BatchedInferencePipeline(self._model).transcribe(
            np.concatenate(samples),
            language=o.language,
            # Without it, a language left to detect is detected once, on the batch's first
            # window, and every window of the batch is decoded in that one.
            multilingual=o.language is None and self._model.model.is_multilingual,
            beam_size=o.beam_size,
            word_timestamps=True,
            without_timestamps=True,
            clip_timestamps=clips,
            batch_size=len(samples),
        )
        found: list[Decoded | None] = [None] * len(samples)
        for raw in raw_segments:
            # seek marks the clip a segment came from (its start is moved to its first word);
            # its word times count from there: the clip's start rounded down to a feature frame.
            at = raw.seek / self._model.frames_per_second
            k = min(range(len(clips)), key=lambda i: abs(clips[i]["start"] - at))
            if (
                raw.no_speech_prob > o.no_speech_threshold
                and raw.avg_logprob < o.log_prob_threshold
            ):
                continue  # what Whisper itself does with a window it judges silent
            found[k] = Decoded(
                text=raw.text,
                words=[_word(w, -at) for w in raw.words or []],
                avg_logprob=raw.avg_logprob,
                no_speech_prob=raw.no_speech_prob,
            )
        return found

    def _with_pieces_alone(
        self, decoded: Decoded, window: Window, samples: np.ndarray, pieces: list[Piece]
    ) -> Decoded:
        """``decoded`` with the words of ``pieces`` taken from decoding each on its own, where
        that hears clearly more of it.

        In a packed window the model hears every piece in the context of the others, and may
        pass over some of one: a short utterance that opens the window, or a sentence the
        window holds twice (said again later), which it writes once, half on each. Heard
        alone, each is heard whole. (The careful path would hear an opening too, but hears
        the rest of a packed window worse than the batched pass did: measured.)
        """
        alone = self._decode_batch(
            [clip(samples, p.window_start, p.window_start + p.duration) for p in pieces]
        )
        mine = window.by_piece(decoded.words)
        replaced: dict[Piece, list[Word]] = {}
        for piece, heard in zip(pieces, alone, strict=True):
            if heard is None or self._unreliable(heard):
                continue
            shift = piece.window_start
            own = [
                w.model_copy(update={"start": w.start + shift, "end": w.end + shift})
                for w in heard.words
            ]
            own = [w for w in own if window.piece_of(w) is piece]
            had = spoken(mine[piece])
            if spoken(own) < had + (MORE_WORDS if had else 1):  # none: any word is more
                continue
            said = [b for w in own if (b := bare(w.word))]
            later = [b for w in decoded.words if midpoint(w) >= shift and (b := bare(w.word))]
            if not had and later[: len(said)] == said:
                continue  # the window heard them, only timed them into the next piece
            replaced[piece] = own
        if not replaced:
            return decoded
        words = list(mine[None])
        for previous, piece in zip((None, *window.pieces[:-1]), window.pieces, strict=True):
            if piece in replaced:
                words += replaced[piece]
                continue
            kept = mine[piece]
            if previous in replaced:  # what the window timed a piece late is there already
                kept = kept[carried(replaced[previous], kept) :]
            words += kept
        words.sort(key=midpoint)  # the order piece_of sorts words into pieces by
        return Decoded(
            text=" ".join(w.word for w in words),
            words=words,
            avg_logprob=decoded.avg_logprob,
            no_speech_prob=decoded.no_speech_prob,
        )

    def _decode_one(self, samples: np.ndarray) -> Decoded | None:
        """The sequential path, with faster-whisper's own skipping of windows it judges to be
        non-speech (and its temperature fallback, if ``temperatures`` asks for one)."""
        o = self.options
        raw_segments, _ = self._model.transcribe(
            samples,
            language=o.language,
            beam_size=o.beam_size,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
            temperature=list(o.temperatures),
            compression_ratio_threshold=o.compression_ratio_threshold,
            log_prob_threshold=o.log_prob_threshold,
            no_speech_threshold=o.no_speech_threshold,
        )
        # Segments that still loop after the fallback are left out here.
        kept = [
            r for r in raw_segments if compression_ratio(r.text) <= o.compression_ratio_threshold
        ]
        if not kept:
            return None
        return Decoded(
            text="".join(r.text for r in kept),
            words=[_word(w, 0.0) for r in kept for w in r.words or []],
            avg_logprob=min(r.avg_logprob for r in kept),
            no_speech_prob=max(r.no_speech_prob for r in kept),
        )

    def _unreliable(self, decoded: Decoded | None, window: Window | None = None) -> bool:
        """A looping or very unsure batched result, worth a second, careful try.

        Given the ``window`` the result is for, looping is judged on its text without the
        pieces that say again what an earlier piece said (see :func:`unrepeated_text`);
        without it (a piece decoded alone), on the whole text.
        """
        o = self.options
        if decoded is None:
            return False
        text = decoded.text if window is None else unrepeated_text(window, decoded)
        return (
            compression_ratio(text) > o.compression_ratio_threshold
            or decoded.avg_logprob < o.log_prob_threshold
        )

    def _segments(
        self, window: Window, decoded: Decoded | None, samples: np.ndarray, source: str
    ) -> list[Segment]:
        """Segments of one decoded window, in track time; ``samples`` is the window's audio."""
        if decoded is None:
            return []
        o = self.options
        out = []
        for piece, piece_words in words_by_piece(window, decoded.words):
            phrases = split_phrases(piece, piece_words, o.split_pause)
            for n, words in enumerate(phrases):
                if n == 0:
                    start = max(piece.floor, anchor(piece, words[0]) - o.lead_in)
                else:  # no voiced onset of its own: the lead-in before its first word
                    start = max(phrases[n - 1][-1].end, words[0].start - o.lead_in)
                out.append(self._segment(start, words, decoded, piece, samples, source))
        return out

    def _segment(
        self,
        start: float,
        words: list[Word],
        decoded: Decoded,
        piece: Piece,
        samples: np.ndarray,
        source: str,
    ) -> Segment:
        """One segment; marked ``dropped`` when its audio is near-silence: text the audio does
        not hold, most likely, though speech quieter than that is lost with it.

        The audio is measured from the voice the segment was anchored to (a region's voiced
        onset, when its first word lies within reach of it), not from its first word alone:
        Whisper can time a region's only word into the pause after it was said, and the
        speech before would then read as no speech at all."""
        o = self.options
        segment = Segment(
            start=round(min(start, words[0].start), 3),
            end=words[-1].end,
            text=" ".join(w.word for w in words),
            words=words,
            avg_logprob=decoded.avg_logprob,
            no_speech_prob=decoded.no_speech_prob,
        )
        voice = min(words[0].start, start + o.lead_in)  # the onset it was anchored to
        first = piece.window_start + voice - piece.track_start
        last = piece.window_start + segment.end - piece.track_start
        level = span_level_db(samples, first, last)
        if level < o.min_segment_level_db:
            log.info("%s: dropped text on near-silence %r", source, segment.text)
            reason = f"audio at {level:.0f} dBFS, under {o.min_segment_level_db:g}"
            return segment.model_copy(update={"dropped": reason})
        return segment


def _word(raw: ModelWord, shift: float) -> Word:
    return Word(
        word=raw.word.strip(),
        start=raw.start + shift,
        end=raw.end + shift,
        probability=round(min(max(raw.probability, 0.0), 1.0), 4),
    )
