"""A value read from JSON or the command line against a type hint: a simulation config's fields
(datasets/config.py), a method's parameters (``bench run --param``) and the fields of a stored
Result record (bench/results.py) are checked with it, so a wrong type is refused by name before
any work instead of failing deep inside a run or a report; an error quotes the value read
(``short_repr``)."""

from __future__ import annotations

import functools
import numbers
import types
import typing


@functools.cache
def field_hints(cls: type) -> dict:
    """``typing.get_type_hints(cls)``, evaluated once per class: it costs more than the check
    itself (0.45 ms for SimConfig), which runs on every config and every stored record."""
    return typing.get_type_hints(cls)


def fits_type(value, hint) -> bool | None:
    """Whether ``value`` (read from JSON or the command line) fits the type hint ``hint`` of a
    method parameter, a config field or a stored record's field: an int fits a float (numpy's
    numbers too), a bool fits no number, a list fits a tuple (JSON has lists only), and the
    items of a list, a tuple and a dict are checked. None where the hint is not made of classes
    (a Literal...): then it is not checked."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        fits = [fits_type(value, option) for option in args]
        return True if True in fits else None if None in fits else False
    if hint is type(None):
        return value is None
    if hint in (int, float):
        kind = numbers.Integral if hint is int else numbers.Real
        return isinstance(value, kind) and not isinstance(value, bool)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        if args and origin is tuple and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return False
            fits = list(map(fits_type, value, args))
        else:
            fits = [fits_type(item, args[0]) for item in value] if args else []
        return False if False in fits else None if None in fits else True
    if origin is dict and args:
        if not isinstance(value, dict):
            return False
        fits = [fits_type(item, item_hint) for pair in value.items()
                for item, item_hint in zip(pair, args, strict=True)]
        return False if False in fits else None if None in fits else True
    cls = origin or hint
    if not isinstance(cls, type):
        return None
    return isinstance(value, (list, tuple) if cls in (list, tuple) else cls)


def short_repr(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for an error that quotes a value read from a
    file (which may be a whole table)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


_ONE = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
        type(None): "None (write None or null)", list: "a list", tuple: "a list",
        dict: "an object"}
_MANY = {int: "integers", float: "numbers", str: "strings", bool: "booleans (true or false)",
         type(None): "nulls", list: "lists", tuple: "lists", dict: "objects"}


def type_text(hint) -> str:
    """A type hint as someone writing JSON or ``KEY=VALUE`` reads it: "a list of 2 numbers"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(map(type_text, args))
    if origin in (tuple, list) and args:
        count = "" if origin is list or args[-1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{_many(args[0])}"
    if origin is dict and args:
        return f"an object of {_many(args[1])} keyed by {_many(args[0])}"
    return _ONE.get(origin or hint, str(hint))


def _many(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(map(_many, typing.get_args(hint)))
    return _MANY.get(typing.get_origin(hint) or hint, f"values of type {hint}")
