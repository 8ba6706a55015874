"""A timeline a person can read at a glance: one row per speaker, the truth above the transcript.

Turns missed, shifted or put on the wrong speaker stand out as bars with no partner in the
row; words put on a participant who never spoke are drawn in red.
"""

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from models import atomic_write_bytes, import_optional

from .evaluate import Turn, relabel, relabelled

__all__ = ["image_format", "plot_timeline"]


def image_format(path: Path) -> str:
    """The image format ``path``'s suffix names (PNG without one); ValueError naming the file
    when matplotlib cannot write it."""
    import_optional("matplotlib", "eval")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    kind = Path(path).suffix.lstrip(".").lower() or "png"
    writable = FigureCanvasAgg.get_supported_filetypes()
    if kind not in writable:
        raise ValueError(f"{path}: cannot draw a .{kind} file; use one of .{', .'.join(writable)}")
    return kind


def plot_timeline(
    hypothesis: Sequence[Turn],
    truth: Sequence[Turn],
    path: Path,
    *,
    speakers: Sequence[str] = (),
    pairs: Mapping[str, str] | None = None,
    title: str = "",
) -> Path:
    """Write the timeline to ``path``, in the format its suffix names (``.png``, ``.pdf``,
    ``.svg``, …; PNG without one); a suffix matplotlib cannot write is a ValueError.

    ``pairs`` (:attr:`Evaluation.speaker_pairs`) draws the transcript as it was scored, each
    speaker on the row of the true speaker it was paired with."""
    if pairs:
        hypothesis = relabelled(hypothesis, pairs)
        speakers = [relabel(speaker, pairs) for speaker in speakers]
    matplotlib = import_optional("matplotlib", "eval")
    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    kind = image_format(path)

    true_speakers = {t.speaker for t in truth}
    rows = list(
        dict.fromkeys([*speakers, *(t.speaker for t in truth), *(t.speaker for t in hypothesis)])
    )
    end = max([1.0, *(t.end for t in [*truth, *hypothesis])])
    fig, ax = plt.subplots(figsize=(max(8.0, min(end / 8, 24.0)), 0.9 * len(rows) + 1.2))

    def bars(turns: Sequence[Turn], speaker: str) -> list[tuple[float, float]]:
        # An utterance of no length (a label put on a moment) is drawn as a thin line.
        return [(t.start, max(t.end - t.start, end / 1000)) for t in turns if t.speaker == speaker]

    for row, speaker in enumerate(rows):
        y = len(rows) - 1 - row
        ax.broken_barh(bars(truth, speaker), (y + 0.05, 0.4), facecolors="0.6")
        colour = "tab:blue" if speaker in true_speakers or not truth else "tab:red"
        ax.broken_barh(bars(hypothesis, speaker), (y - 0.45, 0.4), facecolors=colour)
    ax.set_yticks(range(len(rows)), list(reversed(rows)))
    ax.set_xlim(0, end * 1.01)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("seconds from the meeting's start")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(
        handles=[
            Patch(facecolor="0.6", label="truth (upper bar)"),
            Patch(facecolor="tab:blue", label="transcript (lower bar)"),
            Patch(facecolor="tab:red", label="words on someone who never spoke"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.18),
        ncol=3,
        fontsize="small",
        frameon=False,
    )
    if title:
        ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format=kind, dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), image.getvalue())
    return Path(path)
