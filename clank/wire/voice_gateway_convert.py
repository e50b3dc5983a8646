"""The voice gateway's one cattrs converter: payload dicts <-> the frozen attrs payload values.

Sans-io. Every JSON payload class subclasses :class:`Message` and declares its wire rules once:
a class-level :class:`Shape` (error prefix, key order, None dropping, whole-payload adapters) and,
where a field reads differently from its type and attrs default, ``attrs.field(metadata=wire(...))``.
One hook factory per direction, registered once on :data:`converter`, turns those declarations into
cattrs-generated functions (``cattrs.gen`` with one ``override`` per field) the first time a class
is used; ``X.parse(d)`` and ``x.serialize()`` are those hooks.

Liberal accept, as Discord's peers need: unknown keys are ignored; an absent key and ``null`` read
the same (the field's default, or an error if it has none); integers may arrive as integral floats
(``30.0``), snowflakes as integers. Anything else raises :class:`MalformedMessage` with close code
4002 naming ``<payload>.<key>`` — never a cattrs error, ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Self, TypeVar

import attrs
import cattrs
from cattrs.fns import identity
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from clank.wire.voice_gateway_base import _bad as bad
from clank.wire.voice_gateway_base import _integral as integral
from clank.wire.voice_gateway_base import _is_int as is_int

converter: Final = cattrs.Converter(detailed_validation=False)
"""The voice gateway family's converter (structuring is lenient as described above)."""

_META: Final = "clank.wire"
REQUIRED: Final = attrs.NOTHING
"""``wire(missing=REQUIRED)``: absent or null is an error even though the attrs field has a default."""
_DEFAULT: Final = object()
_FAIL: Final = object()

FieldHook = Callable[[object, Any], Any]
"""A cattrs field hook: (raw value, field type) -> field value."""


@attrs.frozen
class Shape:
    """How one payload class looks on the wire (declared once, as the class's ``WIRE``)."""

    name: str
    """Prefix of error messages: ``<name>.<key> is not an integer``."""
    order: tuple[str, ...] | None = None
    """Output key order when it differs from the field order."""
    drop_none: bool = False
    """Leave out keys whose value is None."""
    pre: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Rewrites the payload object before it is read (nested ``data``, derived defaults)."""
    bare: Callable[[object], object] | None = None
    """Reads a payload that is not an object (bare-integer heartbeats) into one."""
    post: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Rewrites the serialized dict (conditional keys, nesting)."""


@attrs.frozen
class _Rules:
    key: str | None
    missing: Any
    empty_is_missing: bool
    snowflake: bool
    check: tuple[Callable[[Any], bool], str] | None
    read: Callable[[str], FieldHook] | None
    write: Callable[[Any], Any] | None


def wire(
    *,
    key: str | None = None,
    missing: Any = _DEFAULT,
    empty_is_missing: bool = False,
    snowflake: bool = False,
    check: tuple[Callable[[Any], bool], str] | None = None,
    read: Callable[[str], FieldHook] | None = None,
    write: Callable[[Any], Any] | None = None,
) -> Mapping[str, Any]:
    """Field metadata: wire ``key`` (rename), the value an absent/null key reads as (``missing``,
    default: the attrs default), falsy values read as missing, snowflake leniency, a range
    ``check`` (predicate, reason), or a custom ``write`` and ``read`` for odd encodings (``read``
    is given ``<payload>.<key>`` and returns the field hook; an absent key takes the attrs default
    or is reported missing)."""
    return {_META: _Rules(key, missing, empty_is_missing, snowflake, check, read, write)}


_NO_RULES: Final = _Rules(None, _DEFAULT, False, False, None, None, None)


class Message:
    """Base of the JSON payload values: ``parse``/``serialize`` go through :data:`converter`."""

    __slots__ = ()
    WIRE: ClassVar[Shape]

    @classmethod
    def parse(cls, d: object) -> Self:
        result: Self = converter.structure(d, cls)
        return result

    def serialize(self) -> dict[str, Any]:
        result: dict[str, Any] = converter.unstructure(self)
        return result


M = TypeVar("M", bound=Message)


def converted(cls: type[M]) -> type[M]:
    """Class decorator (over ``attrs.frozen``): bind the converter's hooks as ``cls.parse`` and
    ``value.serialize`` so a hot payload costs one generated call, not a dispatch per message."""
    setattr(cls, "parse", staticmethod(converter.get_structure_hook(cls)))  # noqa: B010
    setattr(cls, "serialize", converter.get_unstructure_hook(cls))  # noqa: B010
    return cls


def _is_message(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, Message) and "WIRE" in t.__dict__


# --------------------------------------------------------------------------- reading


_NOUNS: Final[Mapping[str, str]] = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "a boolean",
    "snowflake": "a snowflake",
}


def _to_float(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return _FAIL


def _to_str(value: object) -> object:
    return value if isinstance(value, str) else _FAIL


def _to_snowflake(value: object) -> object:
    """Snowflakes are decimal strings; tolerate integers from sloppy peers."""
    if isinstance(value, str) and value:
        return value
    return str(value) if is_int(value) else _FAIL


def _to_bool(value: object) -> object:
    return value if isinstance(value, bool) else _FAIL


def _to_int(value: object) -> object:
    out = integral(value)
    return _FAIL if out is None else out


_SCALARS: Final[Mapping[Any, tuple[str, Callable[[object], object]]]] = {
    int: ("int", _to_int),
    float: ("float", _to_float),
    str: ("str", _to_str),
    bool: ("bool", _to_bool),
}


def _split_optional(tp: Any) -> tuple[Any, bool]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _converter_for(path: str, tp: Any, rules: _Rules) -> Callable[[object], object]:
    """The type check and conversion of a present, non-null value; raises naming ``path``."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if item is str:
            noun, to = ("snowflake", _to_snowflake) if rules.snowflake else ("string", _to_str)

            def strings(value: object) -> object:
                if not isinstance(value, list):
                    raise bad(f"{path} is not a list")
                out = tuple(to(v) for v in value)
                if _FAIL in out:
                    raise bad(f"{path} holds a non-{noun}")
                return out

            return strings
        hook = converter.get_structure_hook(item)

        def messages(value: object) -> object:
            if not isinstance(value, list):
                raise bad(f"{path} is not a list")
            return tuple(hook(v, item) for v in value)

        return messages
    if _is_message(tp):
        nested = converter.get_structure_hook(tp)
        return lambda value: nested(value, tp)
    if rules.snowflake:
        return _to_snowflake
    return _SCALARS[tp][1]


def _noun(tp: Any, rules: _Rules) -> str:
    if rules.snowflake:
        return _NOUNS["snowflake"]
    entry = _SCALARS.get(tp)
    return _NOUNS[entry[0]] if entry else "valid"


_FAST: Final[Mapping[Any, type]] = {int: int, float: float, str: str, bool: bool}
"""Field types whose exact-type values need no conversion (the common case, kept to one test)."""


def _reader(owner: str, field: attrs.Attribute[Any], key: str) -> FieldHook:
    rules: _Rules = field.metadata.get(_META) or _NO_RULES
    path = f"{owner}.{key}"
    if rules.read is not None:
        return rules.read(path)
    tp, _ = _split_optional(field.type)
    missing = rules.missing
    if missing is _DEFAULT:
        missing = field.default
    if isinstance(missing, attrs.Factory):  # type: ignore[arg-type]
        raise TypeError(f"{path}: a factory default needs wire(missing=...)")
    to = _converter_for(path, tp, rules)
    noun = _noun(tp, rules)
    reason = f"{path} is missing or not {noun}" if missing is REQUIRED else f"{path} is not {noun}"
    empty, check = rules.empty_is_missing, rules.check

    def read(value: object, _t: Any = None) -> Any:
        if value is None:
            if missing is REQUIRED:
                raise bad(reason)
            return missing
        out = to(value)
        if out is _FAIL:
            raise bad(reason)
        if empty and not out:
            return missing
        if check is not None and not check[0](out):
            raise bad(f"{path} {check[1]}")
        return out

    fast = str if rules.snowflake and tp is str else _FAST.get(tp)
    if fast is None or empty or check is not None:
        return read
    if rules.snowflake:

        def read_snowflake(value: object, _t: Any = None) -> Any:
            return value if type(value) is str and value else read(value)

        return read_snowflake

    def read_exact(value: object, _t: Any = None) -> Any:
        return value if type(value) is fast else read(value)

    return read_exact


def _make_structure(cls: Any) -> FieldHook:
    shape = cls.WIRE
    attrs.resolve_types(cls)
    overrides: dict[str, Any] = {}
    prefill: dict[str, None] = {}
    for field in attrs.fields(cls):
        rules: _Rules = field.metadata.get(_META) or _NO_RULES
        key = rules.key or field.name
        overrides[field.name] = override(rename=key, struct_hook=_reader(shape.name, field, key))
        # cattrs' own rule for an absent key: the attrs default if there is one, else KeyError
        # ("is missing"). Keys that read otherwise are filled with None for their reader.
        required = rules.missing is REQUIRED and field.default is attrs.NOTHING
        if rules.missing is not _DEFAULT and rules.read is None and not required:
            prefill[key] = None
    generated = make_dict_structure_fn(cls, converter, _cattrs_detailed_validation=False, **overrides)
    name, pre, bare = shape.name, shape.pre, shape.bare
    not_object = f"{name} payload is not an object"

    def structure(d: Any, _t: Any = cls) -> Any:
        if not isinstance(d, dict):
            if bare is not None:
                d = bare(d)
            if not isinstance(d, dict):
                raise bad(not_object)
        if pre is not None:
            d = pre(d)
        if prefill:
            d = prefill | d
        try:
            return generated(d)
        except KeyError as exc:
            raise bad(f"{name}.{exc.args[0]} is missing") from None

    if pre is not None or bare is not None or prefill:
        return structure

    def structure_plain(d: Any, _t: Any = cls) -> Any:  # the hot payloads: no adapters
        if not isinstance(d, dict):
            raise bad(not_object)
        try:
            return generated(d)
        except KeyError as exc:
            raise bad(f"{name}.{exc.args[0]} is missing") from None

    return structure_plain


# --------------------------------------------------------------------------- writing


def _writer(tp: Any) -> Callable[[Any], Any]:
    tp, optional = _split_optional(tp)
    write: Callable[[Any], Any]
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if _is_message(item):
            nested = converter.get_unstructure_hook(item)
            write = lambda value: [nested(v) for v in value]  # noqa: E731
        else:
            write = list
    elif _is_message(tp):
        write = converter.get_unstructure_hook(tp)
    else:
        return identity
    if optional:
        inner = write
        return lambda value: None if value is None else inner(value)
    return write


def _make_unstructure(cls: Any) -> Callable[[Any], dict[str, Any]]:
    shape = cls.WIRE
    attrs.resolve_types(cls)
    overrides: dict[str, Any] = {}
    for field in attrs.fields(cls):
        rules: _Rules = field.metadata.get(_META) or _NO_RULES
        key = rules.key or field.name
        write = rules.write or _writer(field.type)
        overrides[field.name] = override(rename=key, unstruct_hook=write)
    generated: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(cls, converter, **overrides)
    unstructure = _reshape(generated, shape.order, shape.drop_none)
    post = shape.post
    if post is None:
        return unstructure
    return lambda value: post(unstructure(value))


def _reshape(
    generated: Callable[[Any], dict[str, Any]], order: tuple[str, ...] | None, drop_none: bool
) -> Callable[[Any], dict[str, Any]]:
    """cattrs writes every key in field order; reorder and drop None keys where the class says."""
    if order is not None:
        keys = order
        if drop_none:

            def ordered_present(value: Any) -> dict[str, Any]:
                out = generated(value)
                return {k: v for k in keys if (v := out[k]) is not None}

            return ordered_present

        def ordered(value: Any) -> dict[str, Any]:
            out = generated(value)
            return {k: out[k] for k in keys}

        return ordered
    if drop_none:

        def present(value: Any) -> dict[str, Any]:
            return {k: v for k, v in generated(value).items() if v is not None}

        return present
    return generated


converter.register_structure_hook_factory(_is_message, _make_structure)
converter.register_unstructure_hook_factory(_is_message, _make_unstructure)
