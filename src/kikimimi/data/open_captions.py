"""Captions of the open corpus written from file metadata: several phrasings per file, each with its template id.

Every corpus file has a ``kind`` (``speech``, ``letter``, ``syllable``, ``drum``, ``note``, ``event``, ``voice``,
``sfx``, ``music``, ``sample``, ``synthetic``, ``tone``) and metadata fields (language, speaker sex, text, letter, tone,
drum piece and kit, GM instrument and family, pitch, velocity, event name, game, …). :data:`TEMPLATES` holds,
per kind, ``train`` templates (written into the corpus's ``captions.csv``) and ``heldout`` templates (never
written for training; :func:`heldout_templates` exports them for caption test sets). A template is used for a
file only when every field it names is present and non-empty.

Template ids are ``<kind>/<role>/<name>``. :func:`check_templates_disjoint` asserts that no training template
is also a test template (of this module or of another test set, e.g. the open suite's).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["ROLES", "TEMPLATES", "caption_file", "check_templates_disjoint", "heldout_templates", "template_fields",
           "words_of"]

ROLES = ("train", "heldout")

#: kind → role → {template name: format string}
TEMPLATES: dict[str, dict[str, dict[str, str]]] = {
    "speech": {
        "train": {
            "lang_sex": "a {sex} speaks {language} over a {channel} line",
            "prompt": "an automated {channel} prompt in {language}",
            "text": "a {sex} saying \"{text}\" in {language}",
            "lang": "{language} speech, recorded for a {channel} voice menu",
            "dialogue": "{language} dialogue spoken in the video game {game}",
            "actor": "a voice actor speaking {language} in {game}",
        },
        "heldout": {
            "lang_sex_h": "{language} voice prompt of a {channel} system, {sex} speaker",
            "text_h": "the words \"{text}\" spoken in {language}",
        },
    },
    "letter": {
        "train": {
            "letter": "the letter {letter} pronounced in {language}",
            "alphabet": "a native speaker reading the {language} alphabet: {letter}",
        },
        "heldout": {"letter_h": "someone says the {language} letter {letter}"},
    },
    "syllable": {
        "train": {
            "syllable": "the syllable \"{text}\" spoken in {language}",
            "tone": "a {voice} voice saying a {language} syllable with the {tone} tone",
            "zhuyin": "the {language} syllable {text}, {tone} tone",
            "pronounce": "someone pronouncing a {language} syllable: {text}",
        },
        "heldout": {"syllable_h": "one spoken {language} syllable, {text}"},
    },
    "drum": {
        "train": {
            "piece_kit": "a {piece} hit from the {kit} drum kit",
            "piece_velocity": "a {dynamics} {piece} stroke",
            "piece": "a single {piece} sample",
        },
        "heldout": {"piece_h": "the sound of a {piece} being hit once"},
    },
    "note": {
        "train": {
            "instrument_note": "a {instrument} playing the note {note}",
            "family_velocity": "a {dynamics} {family} note",
            "instrument_dyn": "one {dynamics} {note} on a {instrument}",
        },
        "heldout": {"instrument_h": "an isolated {family} tone, pitch {note}"},
    },
    "event": {
        "train": {
            "event_theme": "the \"{event}\" sound of the {theme} sound theme",
            "event": "a computer notification sound: {event}",
            "category": "a {category} sound from {theme}",
        },
        "heldout": {"event_h": "a desktop alert for {event}"},
    },
    "voice": {
        "train": {
            "line_game": "a cartoon character shouting \"{text}\" in the game {game}",
            "line": "a character's voice line: \"{text}\"",
        },
        "heldout": {"line_h": "a game character says \"{text}\""},
    },
    "sfx": {
        "train": {
            "name_game": "a {name} sound effect from the game {game}",
            "game": "a sound effect from the video game {game}",
            "game_short": "a short sound from {game}",
            "name": "a {name} sound effect",
            "name_short": "{name}, a sound effect",
        },
        "heldout": {"name_h": "game audio: {name}"},
    },
    "music": {
        "train": {
            "title": "instrumental music: \"{title}\"",
            "source": "{style} music from {source}",
            "style": "a {style} music track",
        },
        "heldout": {"music_h": "a piece of {style} music"},
    },
    "sample": {
        "train": {
            "category_name": "a {category} sample called {name}",
            "category_short": "one {category} sample",
            "category": "a {category} sample from the {source} sample library",
        },
        "heldout": {"sample_h": "{name}, a {category} sound"},
    },
    "synthetic": {
        "train": {
            "what": "{what}, generated by a computer",
            "synth": "a synthetic test signal: {what}",
        },
        "heldout": {"synthetic_h": "an artificial sound, {what}"},
    },
    "tone": {
        "train": {"tone": "a {name} signal of a telephone system",
                  "exchange": "a {name} played by a telephone exchange"},
        "heldout": {"tone_h": "a phone line {name}"},
    },
}


def template_fields(fmt: str) -> list[str]:
    """The field names of a format string (``"a {x} of {y}"`` → ``["x", "y"]``)."""
    return [f for _, f, _, _ in string.Formatter().parse(fmt) if f]


def caption_file(meta: Mapping[str, str], *, per_file: int = 3, rng: np.random.Generator | None = None,
                 role: str = "train") -> list[tuple[str, str]]:
    """``[(template id, caption)]`` for one file: up to ``per_file`` distinct ``role`` templates of its kind whose
    fields are all in ``meta`` (seeded choice when more apply; all in template order otherwise).

    Raises:
        KeyError: ``meta["kind"]`` has no templates.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    kind = meta["kind"]
    usable = [(name, fmt) for name, fmt in TEMPLATES[kind][role].items()
              if all(str(meta.get(f, "")).strip() for f in template_fields(fmt))]
    if len(usable) > per_file:
        rng = rng if rng is not None else np.random.default_rng(0)
        usable = [usable[int(i)] for i in sorted(rng.choice(len(usable), per_file, replace=False))]
    out = []
    for name, fmt in usable:
        text = fmt.format(**{f: str(meta[f]).strip() for f in template_fields(fmt)})
        text = re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", re.sub(r"\s+", " ", text).strip())
        out.append((f"{kind}/{role}/{name}", text))
    return out


def heldout_templates() -> dict[str, str]:
    """``{template id: format string}`` of every held-out template (for caption test sets)."""
    return {f"{kind}/heldout/{name}": fmt for kind, roles in TEMPLATES.items()
            for name, fmt in roles["heldout"].items()}


def _normalise(fmt: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\{[^}]*\}", "{}", fmt)).strip().lower()


def check_templates_disjoint(train: Iterable[str], test: Iterable[str]) -> None:
    """Assert that no training template equals a test template (field names ignored, case-insensitive).

    Raises:
        ValueError: naming one template found on both sides.
    """
    shared = {_normalise(t) for t in train} & {_normalise(t) for t in test}
    if shared:
        raise ValueError(f"caption template '{sorted(shared)[0]}' is used for training and for testing")


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def words_of(name: str, *, drop: Iterable[str] = ()) -> str:
    """File-name stem → words: ``"dialog-warning"`` → ``"dialog warning"``, ``"HubConnected2"`` → ``"hub
    connected"``; ``drop`` lists words (lower case) to leave out."""
    text = _CAMEL.sub(" ", name)
    text = re.sub(r"[_\-.+]+", " ", text)
    text = re.sub(r"\d+", " ", text)
    dropped = {d.lower() for d in drop}
    return " ".join(w for w in text.lower().split() if w not in dropped)
