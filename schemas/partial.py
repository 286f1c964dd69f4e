"""A document that failed validation, rebuilt from the fields that validated, so that its
cross-field rules (`problems()`) report beside its field errors instead of after their fix."""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from pydantic import AliasChoices, BaseModel, ValidationError, create_model

from schemas.base import Problem, StrictModel

T = TypeVar("T")
Loc = tuple[str | int, ...]


class UnknownValue(Exception):
    """A rule used the value of a field that failed validation: its input is unknown."""


def _unknown_used(*_: object) -> NoReturn:
    raise UnknownValue


class _Unknown:
    """The value of a field that failed validation. `is None` and `isinstance` tell it is
    written and of no expected type; any other use (truth, comparison, length, iteration, an
    attribute, formatting) raises `UnknownValue`, which ends the rule that used it."""

    __slots__ = ()

    __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = _unknown_used
    __len__ = __iter__ = __contains__ = __getitem__ = _unknown_used
    __str__ = __repr__ = __format__ = __int__ = __float__ = __index__ = _unknown_used
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _unknown_used
    __truediv__ = __rtruediv__ = __neg__ = _unknown_used

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):  # copy, pickle and pydantic probe dunders with a default
            raise AttributeError(name)
        raise UnknownValue


UNKNOWN: Any = _Unknown()


# How a rule fails on an unknown value: UnknownValue, or where C code wants a type
# (`re.match`, `compile`) TypeError, or where a model was expected (`type(v).model_fields`)
# AttributeError.
UNKNOWN_USED = (UnknownValue, TypeError, AttributeError)


def until_unknown(found: Iterator[T]) -> Iterator[T]:
    """The items of `found` up to the first that needs an unknown value."""
    try:
        yield from found
    except UNKNOWN_USED:
        return


def partial_model(
    model: type[StrictModel], raw: Mapping[str, Any], errors: Sequence[Loc]
) -> StrictModel | None:
    """`model` built from `raw` though validation failed: each field with an error at or
    under it (`errors`: pydantic's locations) is `UNKNOWN`, or, when it holds models, those
    models built the same way. The result is an instance of `model` (of a subclass whose
    `problems()` stops at the first rule needing an unknown value), never a valid document:
    it exists only to run the rules.

    Returns:
        The model, or None when it cannot be built at all (its own value failed).
    """
    built = _partial(model, raw, errors)
    return None if built is UNKNOWN else typing.cast(StrictModel, built)


def _partial(model: type[StrictModel], raw: Any, errors: Sequence[Loc]) -> Any:
    if not isinstance(raw, Mapping) or any(not loc for loc in errors):
        return UNKNOWN
    below = _by_first(errors)
    fields = _fields_by_key(model)
    # A field is unknown when an error is at or under any key naming it (one missing is
    # named by its location alone).
    unknown = {fields[key] for key in below if key in fields}
    data: dict[str, Any] = {name: UNKNOWN for name in unknown}
    for key, value in raw.items():
        name = fields.get(key)
        if name is None:
            continue  # not a field: its own error says so, and no rule reads it
        if key in below:
            data[name] = _value(model.model_fields[name].annotation, value, below[key])
        elif name not in unknown:
            data[key] = value
    return _validated(model, data, frozenset(unknown))


def _validated(model: type[StrictModel], data: dict[str, Any], unknown: frozenset[str]) -> Any:
    """Validate `data` with the `unknown` fields taking any value. A model validator running
    before the fields may make another field unknown (a check's name, from a URL that failed):
    that field takes any value too."""
    while True:
        try:
            return _twin(model, unknown).model_validate(data)
        except UNKNOWN_USED:
            return UNKNOWN  # a model validator needed an unknown value
        except ValidationError as error:
            more = {
                str(detail["loc"][0])
                for detail in error.errors(include_url=False)
                if detail["loc"] and detail["input"] is UNKNOWN
            }
            if not more or more <= unknown:
                return UNKNOWN
            unknown |= more


class _Rebuilt(StrictModel):
    """The base of a model rebuilt by `partial_model`: its rules stop at an unknown value."""

    def problems(self) -> Iterator[Problem]:
        # The rules are one generator: the first needing an unknown value ends this model's
        # rules (those after it too, unless `separately`); the enclosing model's rules go on.
        yield from until_unknown(super().problems())

    def separately(self, problems: Iterator[Problem]) -> Iterator[Problem]:
        return until_unknown(problems)  # ends these rules alone


@functools.lru_cache(maxsize=512)
def _twin(model: type[StrictModel], unknown: frozenset[str]) -> type[StrictModel]:
    """`model` with the `unknown` fields taking any value."""
    fields: dict[str, Any] = {name: (Any, ...) for name in sorted(unknown)}
    return create_model(model.__name__, __base__=(_Rebuilt, model), __module__=__name__, **fields)


def _value(annotation: Any, value: Any, errors: Sequence[Loc]) -> Any:
    """A field's value with errors under it: models and lists or mappings of models are
    built part by part, anything else is unknown."""
    if any(not loc for loc in errors):
        return UNKNOWN
    shape = _shape(annotation)
    if shape is None:
        return UNKNOWN
    container, item = shape
    if container is None:
        return _partial(item, value, errors)
    below = _by_first(errors)
    if container is list and isinstance(value, list):
        return [_item(item, v, below.get(i)) for i, v in enumerate(value)]
    if container is dict and isinstance(value, dict):
        return {k: _item(item, v, below.get(k)) for k, v in value.items()}
    return UNKNOWN


def _by_first(errors: Sequence[Loc]) -> dict[str | int, list[Loc]]:
    """Non-empty locations by their first part, each without it."""
    below: dict[str | int, list[Loc]] = {}
    for loc in errors:
        below.setdefault(loc[0], []).append(loc[1:])
    return below


def _item(model: type[StrictModel], value: Any, errors: Sequence[Loc] | None) -> Any:
    if errors:
        return _partial(model, value, errors)
    try:
        return model.model_validate(value)
    except ValidationError:
        return UNKNOWN


def _shape(annotation: Any) -> tuple[type | None, type[StrictModel]] | None:
    """(None, M) for a model field, (list, M) or (dict, M) for a list or mapping of
    models, each optional; None for anything else (a plain value, a union of models)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            return None
        annotation = members[0]
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return None, annotation
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    item = arguments[-1] if arguments else None
    if origin in (list, dict) and isinstance(item, type) and issubclass(item, StrictModel):
        return origin, item
    return None


@functools.cache
def _fields_by_key(model: type[BaseModel]) -> dict[str | int, str]:
    """Each key a document may write for a field (its name and aliases), to its name."""
    found: dict[str | int, str] = {}
    for name, info in model.model_fields.items():
        found[name] = name
        alias = info.validation_alias
        if isinstance(alias, str):
            found[alias] = name
        elif isinstance(alias, AliasChoices):
            found.update((c, name) for c in alias.choices if isinstance(c, str))
    return found
