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
_SPOKEN_PRONOUN = re.compile(r"\b(?:I|I'm|I'll|we|we're|we'll|our|(?-i:us)|my|me|you|your)\b", re.I)
# Words only a speaker says: "I", "my", "you", "let's", "sorry" stand in a report only
# inside a quotation. Seen in the 0.5B model's topic summaries of AMI meetings, where a
# sentence runs on into the speaker's line: "… suggested different kinds of dogs but I
# like dogs.", "… for let's make that go away, that means we've got five minutes."
_SPEAKERS_OWN = re.compile(
    rf"(?<![\w'’-])(?:(?-i:I)(?:{_APOSTROPHE}(?:m|ll|ve|d))?|me|my|mine|myself"
    rf"|you(?:{_APOSTROPHE}(?:re|ve|ll|d))?|your|yours|let{_APOSTROPHE}s|sorry|gonna|wanna)"
    r"(?![\w'’-])",
    re.I,
)
# "we" inside a report is the speakers: "… to decide what we're going to do" -> "… what
# they're going to do". "US" (the country) is not "us".
_GROUP_WORD = re.compile(
    rf"(?<![\w'’-])(?:we(?:{_APOSTROPHE}(?:re|ve|ll|d))?|(?-i:us|Us)|our|ours|ourselves)"
    r"(?![\w'’-])",
    re.I,
)
_THIRD_PERSON = {"we": "they", "us": "them", "our": "their", "ours": "theirs"}
# Once "I'll" is said of its speaker, the speaker's "my" is theirs too: "I will introduce
# myself" came out as "Project Manager will introduce myself" (QMSum val, ES2006a). "Me"
# stays: "… ask them to email me" has no one reading of "them".
_OWN_WORDS = re.compile(r"(?<![\w'’-])(?:myself|my|mine)(?![\w'’-])", re.I)
_OWN_AS_THEIRS = {"myself": "themselves", "my": "their", "mine": "theirs"}
_QUOTED = re.compile(r"(\"[^\"]*\"|“[^”]*”)")


# A word broken off and said again whole ("mo modern", "deskt desktop", "re responses",
# "t take"), as AMI's transcripts write it and the 0.5B model copies it. Short words of
# their own ("we were", "he helps", "in into") are not fragments.
_FRAGMENT = re.compile(r"(?<![\w'’-])([a-z]{1,5})\s+(?=(\1[a-z]+)\b)")
_WHOLE_WORDS = frozenset(
    "a an i he we in on at as is it to be by do go no so or of up us me my the then this "
    "that for from with will can not and but all any one out our her his him she they "
    "there their here how who what when where was were are has had have".split()
)


def _without_fragments(text: str) -> str:
    return _FRAGMENT.sub(lambda m: m.group(0) if m.group(1) in _WHOLE_WORDS else "", text)


def without_fillers(text: str) -> str:
    """The words without "uh", "um", broken-off words and words said twice in a row,
    spacing kept tidy."""
    cleaned = _without_fragments(_FILLER.sub("", text))
    cleaned = _PLURAL_STUTTER.sub(r"\2", _STUTTER.sub(r"\1", cleaned))
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
        return as_reported(plural)
    singular = _subject(body, "I", owner) if owner else None
    if singular is None:
        return as_reported(sentence)
    owned = _outside_quotes(_OWN_WORDS, lambda m: _OWN_AS_THEIRS[m.group(0).lower()], singular)
    return as_reported(owned)


def _outside_quotes(pattern: re.Pattern, repl, sentence: str) -> str:
    """``pattern.sub(repl, …)`` on the reporter's words only: quotations keep theirs."""
    parts = _QUOTED.split(sentence)  # quotations at the odd places
    return "".join(part if i % 2 else pattern.sub(repl, part) for i, part in enumerate(parts))


def _unquoted(sentence: str) -> str:
    return _QUOTED.sub(" ", sentence)


def speaks_as_a_speaker(sentence: str) -> bool:
    """A word only a speaker says stands outside quotation marks: "I", "my", "you",
    "let's", "sorry"; or the sentence opens in a speaker's voice."""
    return in_speakers_voice(sentence) or bool(_SPEAKERS_OWN.search(_unquoted(sentence)))


# Where a report may stop before the speaker's words begin: a comma, or a word that
# joins the next clause or phrase ("… different kinds of dogs but I like dogs").
_JOINS = frozenset(
    "and but so because while although though as since when which that for to or "
    "then where if".split()
)
MIN_REPORT_WORDS = 6


def before_the_speakers_words(sentence: str) -> str | None:
    """The report a sentence makes before it runs on into a speaker's line, or None.

    "Project Manager proposed a smaller eraser and the user interface suggested different
    kinds of dogs but I like dogs." ends at "dogs.": the clause before the joining word
    that opens the speaker's words. None when the sentence opens in a speaker's voice or
    too little is left to be a sentence.
    """
    if in_speakers_voice(sentence):
        return None
    found = _SPEAKERS_OWN.search(_unquoted(sentence))
    if found is None or '"' in sentence[: found.start()] or "“" in sentence[: found.start()]:
        return None
    words = sentence[: found.start()].split()
    while words:
        last = words.pop()
        if last.lower().strip(",;:—-") in _JOINS or last.endswith((",", ";", ":", "—")):
            break
    else:
        return None
    while words and words[-1].lower().strip(",;:") in _JOINS:  # "… dogs, but"
        words.pop()
    if len(words) < MIN_REPORT_WORDS:
        return None
    head = " ".join(words).rstrip(",;:—- ")
    return None if speaks_as_a_speaker(head) else head + "."


def as_an_item(text: str, is_action: bool) -> str:
    """An item's words as a report, or "" when they are a speaker's own.

    An item that opens in a speaker's voice ("I proposed that I make the eraser
    smaller.", an "I" nobody owns) is not an item; one that runs on into a speaker's
    line keeps the report before it. An action item may keep a speaker's word later
    on ("… so that you can look at the folder"); a key point may not.
    """
    if not speaks_as_a_speaker(text):
        return text
    if in_speakers_voice(LABEL.sub("", text, count=1)):
        return ""
    text = before_the_speakers_words(text) or text
    return "" if not is_action and speaks_as_a_speaker(text) else text


def _third_person(match: re.Match) -> str:
    word = match.group(0)
    stem, _, tail = word.replace("’", "'").partition("'")
    if stem.lower() == "ourselves":
        said = "themselves"
    else:
        said = _THIRD_PERSON[stem.lower()] + (f"'{tail}" if tail else "")
    return said[0].upper() + said[1:] if word[0].isupper() else said


def as_reported(sentence: str) -> str:
    """The speakers' "we", "our" and "us" said as "they", "their" and "them" in a report.

    Only in a sentence that is otherwise a report: next to "I" or "you" the "we" is a
    speaker's own, and the sentence stays as it was. Quotations keep their words.
    """
    if speaks_as_a_speaker(sentence):
        return sentence
    return _outside_quotes(_GROUP_WORD, _third_person, sentence)


def in_speakers_voice(sentence: str) -> bool:
    """The sentence speaks as a speaker: it opens with "I", or a first- or second-person
    word stands in its first three words after an opener ("So, this is our first
    meeting …"). A report says "the group" or names the person."""
    body = _OPENER.sub("", _unquoted(sentence).strip())
    if _FIRST_SINGULAR.match(body):
        return True
    return bool(_SPOKEN_PRONOUN.search(" ".join(body.split()[:3])))
