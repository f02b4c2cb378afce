"""Whisper's languages: ISO-639-1 (or -3) code <-> the lower-case English name OpenAI returns.

In ``core`` because every layer speaks them: the task options validate codes, the speech
layer routes by them, the LLM prompt names the summary's language, the OpenAI routes
answer with the names.
"""

from __future__ import annotations

LANGUAGE_NAMES = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
    "mi": "maori",
    "ml": "malayalam",
    "cy": "welsh",
    "sk": "slovak",
    "te": "telugu",
    "fa": "persian",
    "lv": "latvian",
    "bn": "bengali",
    "sr": "serbian",
    "az": "azerbaijani",
    "sl": "slovenian",
    "kn": "kannada",
    "et": "estonian",
    "mk": "macedonian",
    "br": "breton",
    "eu": "basque",
    "is": "icelandic",
    "hy": "armenian",
    "ne": "nepali",
    "mn": "mongolian",
    "bs": "bosnian",
    "kk": "kazakh",
    "sq": "albanian",
    "sw": "swahili",
    "gl": "galician",
    "mr": "marathi",
    "pa": "punjabi",
    "si": "sinhala",
    "km": "khmer",
    "sn": "shona",
    "yo": "yoruba",
    "so": "somali",
    "af": "afrikaans",
    "oc": "occitan",
    "ka": "georgian",
    "be": "belarusian",
    "tg": "tajik",
    "sd": "sindhi",
    "gu": "gujarati",
    "am": "amharic",
    "yi": "yiddish",
    "lo": "lao",
    "uz": "uzbek",
    "fo": "faroese",
    "ht": "haitian creole",
    "ps": "pashto",
    "tk": "turkmen",
    "nn": "nynorsk",
    "mt": "maltese",
    "sa": "sanskrit",
    "lb": "luxembourgish",
    "my": "myanmar",
    "bo": "tibetan",
    "tl": "tagalog",
    "mg": "malagasy",
    "as": "assamese",
    "tt": "tatar",
    "haw": "hawaiian",
    "ln": "lingala",
    "ha": "hausa",
    "ba": "bashkir",
    "jw": "javanese",
    "su": "sundanese",
    "yue": "cantonese",
}
_LANGUAGE_CODES = {name: code for code, name in LANGUAGE_NAMES.items()}


def language_name(code: str | None) -> str:
    if not code:
        return "unknown"
    return LANGUAGE_NAMES.get(code.lower(), code.lower())


def language_code(value: str) -> str | None:
    """The code for a code or an English name; None if Whisper does not know it."""
    value = value.strip().lower()
    if value in LANGUAGE_NAMES:
        return value
    return _LANGUAGE_CODES.get(value)


def language_codes(value: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """A list of languages (codes or names; a comma-separated string too) as codes.

    ``None`` for nothing; ``ValueError`` naming the first one Whisper does not know.
    """
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    codes: list[str] = []
    for item in items:
        if not str(item).strip():
            continue
        code = language_code(str(item))
        if code is None:
            raise ValueError(f"'{item}' is not a language Whisper knows; use ISO-639-1 codes")
        if code not in codes:
            codes.append(code)
    return codes or None
