"""Plain mutable records for the modules every container's shim imports.

A :class:`Record` subclass declares its fields as a dataclass does, by class
annotations with optional defaults, and gets ``__init__`` (positional or by
keyword), ``__eq__``, ``__repr__`` and :meth:`Record.to_json`. It exists
because importing :mod:`dataclasses` pulls in :mod:`inspect` (with ``ast``,
``dis`` and ``tokenize``): about 1.1 MB of resident memory in each shim, where
the rest of the shim costs about 3 MB over the bare interpreter. Modules the
daemon alone uses keep using dataclasses.

Defaults that are lists, dicts, sets or records are copied for each
instance, so ``tags: list[str] = []`` means what
``field(default_factory=list)`` means, and ``limits: Limits = Limits()``
what ``field(default_factory=Limits)`` means.
Immutable records in the same modules are :class:`typing.NamedTuple`.
"""

from __future__ import annotations

from typing import Any, ClassVar

_MUTABLE = (list, dict, set)


class Record:
    """Base class; see the module's documentation."""

    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: list[str] = list(cls._fields)
        defaults = dict(cls._defaults)
        # The class's own annotations; inspect.get_annotations would pull
        # inspect (and dis, ...) into the shim, which imports only the stdlib's light modules.
        own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
        for name, annotation in own.items():
            if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
                continue
            if name not in fields:
                fields.append(name)
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
            elif defaults and name not in defaults:
                raise TypeError(f"{cls.__name__}.{name}: a field without a default follows one with a default")
        cls._fields = tuple(fields)
        cls._defaults = defaults

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if len(args) > len(cls._fields):
            raise TypeError(
                f"{cls.__name__}() takes {len(cls._fields)} positional arguments but {len(args)} were given"
            )
        for name, value in zip(cls._fields, args):
            if name in kwargs:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
            kwargs[name] = value
        unknown = set(kwargs).difference(cls._fields)
        if unknown:
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {sorted(unknown)[0]!r}")
        for name in cls._fields:
            if name in kwargs:
                value = kwargs[name]
            elif name in cls._defaults:
                value = _fresh(cls._defaults[name])
            else:
                raise TypeError(f"{cls.__name__}() missing required argument {name!r}")
            object.__setattr__(self, name, value)

    def copy(self) -> Record:
        """A copy whose list, dict, set and record fields are copies too."""
        return type(self)(**{name: _fresh(getattr(self, name)) for name in self._fields})

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The field names, in declaration order (base classes' first)."""
        return cls._fields

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._fields)

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({inner})"

    def to_json(self) -> dict[str, Any]:
        """The fields as a dict, nested records and named tuples converted too (as ``dataclasses.asdict``)."""
        return {name: _plain(getattr(self, name)) for name in self._fields}


def _fresh(value: Any) -> Any:
    return value.copy() if isinstance(value, (_MUTABLE, Record)) else value


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
