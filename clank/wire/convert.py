"""One cattrs converter per wire family: JSON payload dicts <-> frozen attrs payload values.

Sans-io. A family (:class:`Family`: the voice gateway, the main gateway's dispatches) owns one
``cattrs.Converter`` and says how its errors read and what a snowflake is. Each payload class
subclasses :class:`Message`, is decorated with ``@family.message`` and declares its wire rules
once: a class-level :class:`Shape` (error prefix, key order, None dropping, whole-payload
adapters) and, where a field reads differently from its type and attrs default,
``attrs.field(metadata=wire(...))``. The family's two hook factories (registered once) turn those
declarations into cattrs-generated functions (``cattrs.gen`` with one ``override`` per field);
``X.parse(d)`` and ``x.serialize()`` are those hooks.

Liberal accept, as Discord's peers need: unknown keys are ignored; an absent key and ``null`` read
the same (the field's default, or an error if it has none); integers may arrive as integral floats
(``30.0``), snowflakes as integers. Anything else raises the family's :class:`MalformedMessage`
naming the payload and key — never a cattrs error, ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Self, TypeGuard, TypeVar

import attrs
import cattrs
from cattrs.fns import identity
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from clank.errors import MalformedMessage

_META: Final = "clank.wire"
REQUIRED: Final = attrs.NOTHING
"""``wire(missing=REQUIRED)``: absent or null is an error even though the attrs field has a default."""
_DEFAULT: Final = object()
_FAIL: Final = object()

FieldHook = Callable[[object, Any], Any]
"""A cattrs field hook: (raw value, field type) -> field value."""
Fail = Callable[[str], MalformedMessage]
"""Builds the error for one field from a problem (``"is not an integer"``)."""


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def integral(value: object) -> int | None:
    """An integer, or a float with an integral value (``30.0``: Discord's JSON has those)."""
    if is_int(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


@attrs.frozen
class Shape:
    """How one payload class looks on the wire (declared once, as the class's ``WIRE``)."""

    name: str
    """The payload's name in errors."""
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
    key: str | None = None
    missing: Any = _DEFAULT
    empty_is_missing: bool = False
    snowflake: bool = False
    check: tuple[Callable[[Any], bool], str] | None = None
    read: Callable[[Fail], FieldHook] | None = None
    write: Callable[[Any], Any] | None = None


_NO_RULES: Final = _Rules()


def wire(
    *,
    key: str | None = None,
    missing: Any = _DEFAULT,
    empty_is_missing: bool = False,
    snowflake: bool = False,
    check: tuple[Callable[[Any], bool], str] | None = None,
    read: Callable[[Fail], FieldHook] | None = None,
    write: Callable[[Any], Any] | None = None,
) -> Mapping[str, Any]:
    """Field metadata: the wire ``key`` (rename); what an absent/null key reads as (``missing``;
    default: the attrs default, else an error); falsy values read as missing; the family's
    snowflake rule; a ``check`` (predicate, problem); or a custom ``write`` and ``read`` for odd
    encodings (``read`` is given the field's error builder and returns the field hook, which also
    gets None for an absent key)."""
    return {_META: _Rules(key, missing, empty_is_missing, snowflake, check, read, write)}


class Message:
    """Base of the JSON payload values; ``@family.message`` binds ``parse`` and ``serialize``."""

    __slots__ = ()
    WIRE: ClassVar[Shape]

    @classmethod
    def parse(cls, d: object) -> Self:
        raise TypeError(f"{cls.__name__} is not registered with a wire family")

    def serialize(self) -> dict[str, Any]:
        raise TypeError(f"{type(self).__name__} is not registered with a wire family")


M = TypeVar("M", bound=Message)

_NOUNS: Final[Mapping[Any, str]] = {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}
_FAST: Final[Mapping[Any, type]] = {int: int, float: float, str: str, bool: bool}
"""Field types whose exact-type values need no conversion (the common case, kept to one test)."""


def _noun(tp: Any, snowflake: bool) -> str:
    if typing.get_origin(tp) is tuple:
        return "a list"
    if snowflake:
        return "a snowflake"
    return _NOUNS.get(tp, "an object")


def _to_int(value: object) -> object:
    out = integral(value)
    return _FAIL if out is None else out


def _to_float(value: object) -> object:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else _FAIL


def _to_str(value: object) -> object:
    return value if isinstance(value, str) else _FAIL


def _to_bool(value: object) -> object:
    return value if isinstance(value, bool) else _FAIL


_SCALARS: Final[Mapping[Any, Callable[[object], object]]] = {
    int: _to_int,
    float: _to_float,
    str: _to_str,
    bool: _to_bool,
}


def _split_optional(tp: Any) -> tuple[Any, bool]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


class Family:
    """One wire family's converter. ``fail(payload, key, problem)`` builds its errors (``key`` is
    None for the payload as a whole); ``snowflake(value)`` returns the snowflake text or None."""

    def __init__(
        self,
        fail: Callable[[str, str | None, str], MalformedMessage],
        snowflake: Callable[[object], str | None],
    ) -> None:
        self.converter: Final = cattrs.Converter(detailed_validation=False)
        self._fail = fail
        self._snowflake = snowflake
        self._classes: set[type] = set()

        def to_snowflake(value: object) -> object:
            out = snowflake(value)
            return _FAIL if out is None else out

        self._to_snowflake = to_snowflake
        self.converter.register_structure_hook_factory(self._owns, self._make_structure)
        self.converter.register_unstructure_hook_factory(self._owns, self._make_unstructure)

    def message(self, cls: type[M]) -> type[M]:
        """Class decorator (over ``attrs.frozen``): register the class and bind the converter's
        hooks as ``cls.parse``/``value.serialize`` (unless the class writes its own), so a hot
        payload costs one generated call, not a dispatch per message."""
        self._classes.add(cls)
        if "parse" not in cls.__dict__:
            setattr(cls, "parse", staticmethod(self.converter.get_structure_hook(cls)))  # noqa: B010
        if "serialize" not in cls.__dict__:
            setattr(cls, "serialize", self.converter.get_unstructure_hook(cls))  # noqa: B010
        return cls

    def _owns(self, t: Any) -> bool:
        return isinstance(t, type) and t in self._classes

    # ----------------------------------------------------------------------- reading

    def _item_reader(self, tp: Any, rules: _Rules, fail: Fail) -> Callable[[object], object]:
        """The type check and conversion of a present, non-null value (``_FAIL`` if it fails)."""
        if typing.get_origin(tp) is tuple:
            item = typing.get_args(tp)[0]
            if item is str:
                noun, to = ("snowflake", self._to_snowflake) if rules.snowflake else ("string", _to_str)

                def strings(value: object) -> object:
                    if not isinstance(value, list):
                        raise fail("is not a list")
                    out = tuple(to(v) for v in value)
                    if _FAIL in out:
                        raise fail(f"holds a non-{noun}")
                    return out

                return strings
            hook = self.converter.get_structure_hook(item)

            def messages(value: object) -> object:
                if not isinstance(value, list):
                    raise fail("is not a list")
                return tuple(hook(v, item) for v in value)

            return messages
        if self._owns(tp):
            nested = self.converter.get_structure_hook(tp)
            return lambda value: nested(value, tp)
        return self._to_snowflake if rules.snowflake else _SCALARS[tp]

    def _reader(self, owner: str, field: attrs.Attribute[Any], key: str) -> FieldHook:
        rules: _Rules = field.metadata.get(_META) or _NO_RULES
        family_fail = self._fail

        def fail(problem: str) -> MalformedMessage:
            return family_fail(owner, key, problem)

        if rules.read is not None:
            return rules.read(fail)
        tp, _ = _split_optional(field.type)
        missing = field.default if rules.missing is _DEFAULT else rules.missing
        if isinstance(missing, attrs.Factory):  # type: ignore[arg-type]
            raise TypeError(f"{owner}.{key}: a factory default needs wire(missing=...)")
        to = self._item_reader(tp, rules, fail)
        noun = _noun(tp, rules.snowflake)
        problem = f"is missing or not {noun}" if missing is REQUIRED else f"is not {noun}"
        empty, check = rules.empty_is_missing, rules.check

        def read(value: object, _t: Any = None) -> Any:
            if value is not None:
                out = to(value)
                if out is _FAIL:
                    raise fail(problem)
                if not (empty and not out):
                    if check is not None and not check[0](out):
                        raise fail(check[1])
                    return out
            if missing is REQUIRED:
                raise fail(problem)
            return missing

        if empty or check is not None:
            return read
        if rules.snowflake and tp is str:
            snowflake = self._snowflake

            def read_snowflake(value: object, _t: Any = None) -> Any:
                out = None if value is None else snowflake(value)
                return read(value) if out is None else out

            return read_snowflake
        fast = _FAST.get(tp)
        if fast is None:
            return read

        def read_exact(value: object, _t: Any = None) -> Any:
            return value if type(value) is fast else read(value)

        return read_exact

    def _make_structure(self, cls: Any) -> FieldHook:
        shape: Shape = cls.WIRE
        name, pre, bare, fail = shape.name, shape.pre, shape.bare, self._fail
        attrs.resolve_types(cls)
        overrides: dict[str, Any] = {}
        prefill: dict[str, None] = {}
        custom: dict[str, FieldHook] = {}
        for field in attrs.fields(cls):
            rules: _Rules = field.metadata.get(_META) or _NO_RULES
            key = rules.key or field.name
            hook = self._reader(name, field, key)
            overrides[field.name] = override(rename=key, struct_hook=hook)
            # cattrs' own rule for an absent key: the attrs default if there is one, else KeyError
            # (-> "is missing", or the custom reader's own error). Keys read otherwise get None.
            required = rules.missing is REQUIRED and field.default is attrs.NOTHING
            if rules.read is not None:
                custom[key] = hook
            elif rules.missing is not _DEFAULT and not required:
                prefill[key] = None
        generated = make_dict_structure_fn(
            cls, self.converter, _cattrs_detailed_validation=False, **overrides
        )

        def missing_key(exc: KeyError) -> MalformedMessage:
            key = exc.args[0]
            if key in custom:
                custom[key](None, None)  # raises the reader's own error for an absent value
            return fail(name, key, "is missing")

        def structure(d: Any, _t: Any = cls) -> Any:
            if not isinstance(d, dict):
                if bare is not None:
                    d = bare(d)
                if not isinstance(d, dict):
                    raise fail(name, None, "payload is not an object")
            if pre is not None:
                d = pre(d)
            if prefill:
                d = prefill | d
            try:
                return generated(d)
            except KeyError as exc:
                raise missing_key(exc) from None

        if pre is not None or bare is not None or prefill:
            return structure

        def structure_plain(d: Any, _t: Any = cls) -> Any:  # the hot payloads: no adapters
            if not isinstance(d, dict):
                raise fail(name, None, "payload is not an object")
            try:
                return generated(d)
            except KeyError as exc:
                raise missing_key(exc) from None

        return structure_plain

    # ----------------------------------------------------------------------- writing

    def _writer(self, tp: Any) -> Callable[[Any], Any]:
        tp, optional = _split_optional(tp)
        write: Callable[[Any], Any]
        if typing.get_origin(tp) is tuple:
            item = typing.get_args(tp)[0]
            if self._owns(item):
                nested = self.converter.get_unstructure_hook(item)
                write = lambda value: [nested(v) for v in value]  # noqa: E731
            else:
                write = list
        elif self._owns(tp):
            write = self.converter.get_unstructure_hook(tp)
        else:
            return identity
        if optional:
            inner = write
            return lambda value: None if value is None else inner(value)
        return write

    def _make_unstructure(self, cls: Any) -> Callable[[Any], dict[str, Any]]:
        shape: Shape = cls.WIRE
        attrs.resolve_types(cls)
        overrides: dict[str, Any] = {}
        for field in attrs.fields(cls):
            rules: _Rules = field.metadata.get(_META) or _NO_RULES
            write = rules.write or self._writer(field.type)
            overrides[field.name] = override(rename=rules.key or field.name, unstruct_hook=write)
        generated: Callable[[Any], dict[str, Any]] = make_dict_unstructure_fn(
            cls, self.converter, **overrides
        )
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
