"""The meaning of a search ``query``, written once for both backends.

Words are what :func:`search_words` makes of a text: runs of letters and
digits, case-folded, diacritics removed (``Ärger`` -> ``arger``). Both
backends index exactly these words (SQLite through a function its FTS5
triggers call, PostgreSQL through a ``tsvector`` built here), so a query means
the same on both:

* several words: every one of them (AND): ``deploy failed``;
* ``"quoted words"``: those words next to each other, in that order (a phrase);
* anything else (``*``, ``OR``, ``NEAR``, ``:``, ``&``) is ordinary text: it
  is never passed on as FTS5 or tsquery syntax.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = [
    "SearchTerms",
    "fts5_match",
    "index_text",
    "parse_query",
    "search_words",
    "tsquery",
    "tsvector",
]

_WORD = re.compile(r"[^\W_]+")
_QUOTED = re.compile(r'"([^"]*)"?')
_MAX_WORD = 256
#: PostgreSQL keeps word positions up to this; later words share it.
_MAX_POSITION = 16383


def search_words(text: str) -> list[str]:
    """The indexed words of ``text``, in order (duplicates kept, for phrases)."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in folded if not unicodedata.combining(c))
    # A word is cut at 256 characters: PostgreSQL refuses lexemes over 2 KB.
    return [w[:_MAX_WORD] for w in _WORD.findall(unicodedata.normalize("NFC", stripped))]


def index_text(text: str) -> str:
    """The words of ``text`` joined by spaces: what SQLite's FTS5 table holds."""
    return " ".join(search_words(text))


@dataclass(frozen=True, slots=True)
class SearchTerms:
    """A parsed query: every term must match; a term of several words is a phrase."""

    terms: tuple[tuple[str, ...], ...]


def parse_query(query: str) -> SearchTerms | None:
    """The terms of ``query``; None when it holds no word (it matches nothing)."""
    terms: list[tuple[str, ...]] = []
    rest: list[str] = []
    position = 0
    for quoted in _QUOTED.finditer(query):
        rest.append(query[position : quoted.start()])
        position = quoted.end()
        words = tuple(search_words(quoted.group(1)))
        if words:
            terms.append(words)
    rest.append(query[position:])
    terms.extend((w,) for w in search_words(" ".join(rest)))
    unique = tuple(dict.fromkeys(terms))
    return SearchTerms(unique) if unique else None


def fts5_match(terms: SearchTerms) -> str:
    """An FTS5 MATCH expression: each term a quoted string (a phrase), ANDed.

    Words hold only letters and digits, so quoting cannot be escaped from.
    """
    return " AND ".join('"' + " ".join(t) + '"' for t in terms.terms)


def tsquery(terms: SearchTerms) -> str:
    """A ``tsquery`` literal: lexemes quoted verbatim, ``<->`` within a phrase, ``&`` between."""
    return " & ".join("(" + " <-> ".join(f"'{w}'" for w in term) + ")" for term in terms.terms)


def tsvector(text: str) -> str:
    """A ``tsvector`` literal of ``text``'s words with their positions (1-based)."""
    positions: dict[str, list[int]] = {}
    for index, word in enumerate(search_words(text), start=1):
        places = positions.setdefault(word, [])
        if len(places) < 256:  # PostgreSQL keeps at most 256 positions per word
            places.append(min(index, _MAX_POSITION))
    return " ".join(
        f"'{word}':" + ",".join(map(str, dict.fromkeys(places)))
        for word, places in positions.items()
    )
