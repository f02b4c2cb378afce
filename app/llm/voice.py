"""Reported speech: a summary says what the speakers said; it does not speak as them.

Seen in the 0.5B model's answers on AMI meetings (QMSum train and validation): action
items copied in the speaker's own voice ("I'll take notes during this meeting so uh
that you can uh look at my uh folder …", "We'll then t take decision in concert …"),
and summary sentences such as "We will discuss the costs and the design of remote
controls." or "So, this is our first meeting of this design project." The people who
wrote QMSum's reference summaries never write "we": they write "the group" or name the
role ("Project Manager introduced the project"). The rewrites here are the mechanical
ones only: a subject and its auxiliary, and the fillers of spoken English.
"""

from __future__ import annotations

import re

# Whole-word fillers of spoken English, with a comma after them ("so uh that", "um, the").
_FILLER = re.compile(r"(?<![\w'’-])(?:uh|um|uhm|erm|er|ah|hmm|mm)(?![\w'’-]),?\s*", re.I)
# A word said twice or more in a row ("the the", "quite quite"), also once more in the
# plural: the 0.5B model wrote "asking American Americans to …" for the JFK clip.
_STUTTER = re.compile(r"\b(\w+)(?:\s+\1\b)+", re.I)
_PLURAL_STUTTER = re.compile(r"\b(\w+)\s+(\1s)\b", re.I)
# Words a speaker opens a turn with before the sentence proper.
_OPENER = re.compile(r"^(?:(?:so|okay|ok|well|right|and|yeah|alright)\b[,.]?\s+)+", re.I)

_APOSTROPHE = "['’]"
# What follows "I" or "We" at the start of a sentence, and the same for a third person
# ("Project Manager" or "The group": both take the singular verb).
_AFTER_SUBJECT = [
    (rf"(?: will|{_APOSTROPHE}ll)", " will"),
    (rf"(?: am|{_APOSTROPHE}m| are|{_APOSTROPHE}re) going to", " is going to"),
    (rf"(?: have|{_APOSTROPHE}ve) to", " has to"),
    (r" need to", " needs to"),
    (r" (should|must|can|could|would|decided|agreed|discussed)", r" \1"),
]
GROUP = "The group"
# "Project Manager: I will take notes …"; answers.without_label strips the same label.
LABEL = re.compile(r"^([^:]{1,60}):\s+")
MAX_LABEL_WORDS = 4
_FIRST_SINGULAR = re.compile(rf"^I(?:{_APOSTROPHE}(?:ll|m|ve|d))?\b")
_SPOKEN_PRONOUN = re.compile(r"\b(?:I|I'm|I'll|we|we're|we'll|our|us|my|me|you|your)\b", re.I)


def without_fillers(text: str) -> str:
    """The words without "uh", "um" and words said twice in a row, spacing kept tidy."""
    cleaned = _PLURAL_STUTTER.sub(r"\2", _STUTTER.sub(r"\1", _FILLER.sub("", text)))
    cleaned = re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"\s{2,}", " ", cleaned)).strip()
    if cleaned and text[:1].isupper():
        cleaned = cleaned[0].upper() + cleaned[1:]
    return cleaned or text


def _subject(sentence: str, pronoun: str, name: str) -> str | None:
    """``sentence`` with its opening ``pronoun`` and verb said of ``name``, or None."""
    if pronoun == "We" and re.match(rf"Let{_APOSTROPHE}s\b", sentence):
        return f"{name} will" + sentence[5:]
    for after, replacement in _AFTER_SUBJECT:
        match = re.match(rf"{pronoun}{after}\b", sentence)
        if match:
            return name + match.expand(replacement) + sentence[match.end() :]
    return None


def reported(text: str, owner: str | None = None) -> str:
    """``text`` in the third person where that is mechanical: "I'll take notes" said by
    the Project Manager becomes "Project Manager will take notes", "We'll decide" becomes
    "The group will decide"; fillers go. Anything else keeps its words.

    A speaker's label in front ("Project Manager: I will take notes …") names the owner.
    """
    label = LABEL.match(text)
    if label and len(label.group(1).split()) <= MAX_LABEL_WORDS:
        said = text[label.end() :]
        rewritten = reported(said, label.group(1).strip())
        if rewritten != without_fillers(said):
            return rewritten
    sentence = without_fillers(text)
    body = _OPENER.sub("", sentence)
    if body != sentence and body:
        body = body[0].upper() + body[1:]
    plural = _subject(body, "We", GROUP)
    if plural is not None:
        return plural
    singular = _subject(body, "I", owner) if owner else None
    return singular if singular is not None else sentence


def in_speakers_voice(sentence: str) -> bool:
    """The sentence speaks as a speaker: it opens with "I", or a first- or second-person
    word stands in its first three words after an opener ("So, this is our first
    meeting …"). A report says "the group" or names the person."""
    body = _OPENER.sub("", sentence.strip())
    if _FIRST_SINGULAR.match(body):
        return True
    return bool(_SPOKEN_PRONOUN.search(" ".join(body.split()[:3])))
