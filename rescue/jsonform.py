"""Frozen dataclasses to plain JSON and back, for layout.json, plans and reports.

Fields are converted by their type hints: nested dataclasses, tuples, enums,
Paths and optionals. Unknown keys are an error, so a garbled file is caught.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def to_json(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (tuple, list)):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    return obj


class FormError(ValueError):
    """Data does not fit the dataclass it should become; says where."""


def from_json(cls: type[T], data: Any, where: str = "$") -> T:
    return _convert(cls, data, where)


def _convert(tp: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, data, where)
            except FormError as e:
                errors.append(str(e))
        raise FormError(errors[0] if errors else f"{where}: unexpected value {data!r}")
    if origin is tuple:
        if not isinstance(data, list):
            raise FormError(f"{where}: expected a list, found {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], x, f"{where}[{i}]") for i, x in enumerate(data))
        if len(args) != len(data):
            raise FormError(f"{where}: expected {len(args)} items, found {len(data)}")
        return tuple(_convert(a, x, f"{where}[{i}]") for i, (a, x) in enumerate(zip(args, data)))
    if origin is dict or tp is dict:
        if not isinstance(data, dict):
            raise FormError(f"{where}: expected an object, found {type(data).__name__}")
        vt = args[1] if args else Any
        return {str(k): _convert(vt, v, f"{where}.{k}") for k, v in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise FormError(f"{where}: expected an object, found {type(data).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = set(data) - names
        if unknown:
            raise FormError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        kwargs = {}
        for f in dataclasses.fields(tp):
            if not f.init:
                continue
            if f.name in data:
                kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FormError(f"{where}: missing key {f.name!r}")
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as e:
            raise FormError(f"{where}: {e}") from None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError:
            raise FormError(f"{where}: {data!r} is not one of {[m.value for m in tp]}") from None
    if tp is Path:
        if not isinstance(data, str):
            raise FormError(f"{where}: expected a path string")
        return Path(data)
    if tp is float and isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data)
    if tp in (int, str, bool):
        if type(data) is not tp:
            raise FormError(f"{where}: expected {tp.__name__}, found {type(data).__name__}")
        return data
    if tp is type(None):
        if data is not None:
            raise FormError(f"{where}: expected null")
        return None
    raise FormError(f"{where}: cannot convert to {tp!r}")
