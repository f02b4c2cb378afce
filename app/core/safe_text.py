"""Text from clients, made safe to store and to put in documents (issue 30).

Names and titles end up in transcripts, subtitles and reports, so they are
normalised once, on the way in: Unicode NFC; line breaks and tabs become one space
(a name is one line: it must not end a subtitle cue or start a Markdown block);
control characters (ESC, BEL, NUL...), unpaired surrogates and the bidi overrides
and isolates (U+202A-U+202E, U+2066-U+2069, which make text read differently from
what it is) are dropped. Free text (an instruction) keeps its newlines and tabs.

The output formats escape what is special to them as well (``app/speech/subtitles.py``,
``app/tasks/report.py``), so a value stored before this existed is still harmless.
Every function here is total: any ``str`` in, a clean ``str`` (or a ``ValueError``
saying what is wrong) out, in time linear in its length.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "BIDI_CONTROLS",
    "LINE_BREAKS",
    "MAX_FILENAME",
    "check_storable",
    "multi_line",
    "one_line",
    "safe_filename",
]

#: Embeddings, overrides and isolates: they reorder how the text around them reads.
BIDI_CONTROLS = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
#: Everything some reader takes for the end of a line.
LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
#: The longest kept filename, in characters (the column holds 512; 255 is what file
#: systems allow, so every real name fits).
MAX_FILENAME = 255
#: The longest extension kept when a filename is shortened (``.flac``, ``.webm``...).
_MAX_EXTENSION = 16


def _dropped(ch: str) -> bool:
    """Control characters, unpaired surrogates and bidi controls: never shown."""
    return ch in BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Cs")


def one_line(value: str) -> str:
    """A name or title: NFC, one line, no control or bidi characters, spaces collapsed."""
    text = unicodedata.normalize("NFC", value)
    kept = (" " if ch in LINE_BREAKS or ch == "\t" else ch for ch in text)
    return " ".join("".join(ch for ch in kept if not _dropped(ch)).split())


def multi_line(value: str) -> str:
    """Free text: NFC, ``\\n`` line ends, tabs kept, other control and bidi characters dropped."""
    text = unicodedata.normalize("NFC", value).replace("\r\n", "\n")
    kept = ("\n" if ch in LINE_BREAKS else ch for ch in text)
    return "".join(ch for ch in kept if ch in "\n\t" or not _dropped(ch)).strip()


def check_storable(value: str) -> str:
    """``value`` unchanged, or ``ValueError`` for what no database column can hold.

    NUL cannot be stored in PostgreSQL text or JSONB, and an unpaired surrogate is not
    UTF-8 at all: both used to fail at the database as a 500.
    """
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000)")
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise ValueError("must not contain unpaired surrogates")
    return value


def safe_filename(name: str | None, max_length: int = MAX_FILENAME) -> str | None:
    """An uploaded file's name as shown: no directories, one clean line, at most
    ``max_length`` characters with the extension kept (``None`` when nothing is left).

    A longer name is shortened rather than refused: the upload itself is fine, and
    the extension is what tells a player the format.
    """
    if not name:
        return None
    # Some clients (old browsers on Windows) send the whole path.
    text = one_line(name.replace("\\", "/").rsplit("/", 1)[-1])
    if len(text) > max_length:
        stem, dot, ext = text.rpartition(".")
        if dot and stem and 0 < len(ext) < _MAX_EXTENSION and " " not in ext:
            text = stem[: max_length - len(ext) - 1].rstrip() + "." + ext
        else:
            text = text[:max_length].rstrip()
    return text or None
