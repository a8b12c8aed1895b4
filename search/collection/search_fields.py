"""What a collection's keyword search reads: the attributes declared searchable (besides
the item's text; default: every string and list-of-strings attribute) and the identifier
attributes whose exact value ranks an item first (`sku`, `gtin` by default).

Declaring them checks the names (attribute names as filters take them, at most
MAX_DECLARED_FIELDS each, no repeats) and, once the collection has items, that some item
has each field (the default identifiers excepted): a typo would otherwise silently empty
the keyword side. The catalog then
stores them and rebuilds the collection's lexical entries in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from search.catalog.attributes import FILTERABLE_KEY
from search.catalog.catalog import Catalog
from search.catalog.lexical import DEFAULT_IDENTIFIERS, LexicalSettings
from search.errors import InvalidInputError, UnknownFieldError

MAX_DECLARED_FIELDS = 64


def checked_names(kind: str, names: Sequence[str]) -> tuple[str, ...]:
    """The names as a tuple, or InvalidInputError naming the first bad one."""
    if isinstance(names, str):
        raise InvalidInputError(f"{kind} fields: a list of names, not one string")
    if len(names) > MAX_DECLARED_FIELDS:
        raise InvalidInputError(f"{kind} fields: at most {MAX_DECLARED_FIELDS}, "
                                f"got {len(names)}")
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not FILTERABLE_KEY.match(name):
            raise InvalidInputError(f"{kind} field {name!r}: a name of letters, digits, "
                                    "'_' and '-' (at most 64, not starting with a digit)")
        if name in seen:
            raise InvalidInputError(f"{kind} field {name!r} is named twice")
        seen.add(name)
    return tuple(names)


def declare(catalog: Catalog, collection_id: int, collection_name: str,
            searchable: Sequence[str] | None, identifiers: Sequence[str]) -> int:
    """Store the fields and rebuild the lexical entries; returns the items re-indexed.
    `searchable=None`: every string and list-of-strings attribute."""
    settings = LexicalSettings(
        None if searchable is None else checked_names("searchable", searchable),
        checked_names("identifier", identifiers))
    # The default identifiers are allowed on any catalog (most have no `gtin`).
    names = list(dict.fromkeys([*(settings.searchable or ()), *(
        i for i in settings.identifiers if i not in DEFAULT_IDENTIFIERS)]))
    unknown = catalog.unknown_attribute_keys(collection_id, names)
    if unknown:
        raise UnknownFieldError(collection_name, unknown)
    return catalog.set_lexical_settings(collection_id, settings)
