"""engine.utils.records: the dataclass-like records the shim's modules use."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import ClassVar, NamedTuple

import pytest

from engine.utils.records import Record


class Limits(Record):
    memory: int = 0
    rules: list[str] = []


class Spec(Record):
    KIND: ClassVar[str] = "spec"
    name: str
    args: list[str] = []
    env: dict[str, str] = {}
    limits: Limits = Limits()


class Point(NamedTuple):
    x: int
    y: int


def test_fields_defaults_and_class_vars():
    assert Spec.fields() == ("name", "args", "env", "limits")
    spec = Spec("a")
    assert (spec.name, spec.args, spec.env, spec.limits) == ("a", [], {}, Limits())
    assert Spec.KIND == "spec"


def test_mutable_defaults_are_fresh_per_instance():
    one, two = Spec("one"), Spec("two")
    one.args.append("x")
    one.env["k"] = "v"
    one.limits.rules.append("c 1:3 rwm")
    assert two.args == [] and two.env == {} and two.limits.rules == []
    assert Spec.fields() and Spec("three").limits == Limits()


def test_positional_keyword_and_errors():
    assert Spec("n", ["a"]) == Spec(name="n", args=["a"])
    with pytest.raises(TypeError, match="missing required argument 'name'"):
        Spec()
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        Spec("n", nope=1)
    with pytest.raises(TypeError, match="multiple values for argument 'name'"):
        Spec("n", name="m")
    with pytest.raises(TypeError, match="takes 4 positional arguments but 5"):
        Spec("n", [], {}, Limits(), 5)
    with pytest.raises(TypeError, match="without a default follows one with a default"):
        type("Bad", (Record,), {"__annotations__": {"a": "int", "b": "int"}, "a": 1})


def test_equality_repr_copy_and_json():
    spec = Spec("n", ["a"], {"k": "v"}, Limits(5, ["r"]))
    assert spec != Spec("n") and spec != ("n",)
    assert repr(Limits(1, [])) == "Limits(memory=1, rules=[])"
    copy = spec.copy()
    assert copy == spec
    copy.args.append("b")
    copy.limits.memory = 9
    assert spec.args == ["a"] and spec.limits.memory == 5
    assert spec.to_json() == {"name": "n", "args": ["a"], "env": {"k": "v"}, "limits": {"memory": 5, "rules": ["r"]}}
    holder = Spec("p", limits=Limits(rules=["x"]))
    holder.env = {"point": Point(1, 2)}  # type: ignore[dict-item]
    assert holder.to_json()["env"] == {"point": {"x": 1, "y": 2}}
    with pytest.raises(TypeError):
        hash(spec)


def test_subclass_adds_fields():
    class Named(Limits):
        label: str = ""

    assert Named.fields() == ("memory", "rules", "label")
    assert Named(1, ["r"], "l").label == "l"


def test_the_shim_does_not_import_dataclasses():
    """The reason the module exists: the shim's import path stays clear of dataclasses and inspect,
    and of anything but the standard library, the engine's modules and the driver's."""
    from engine.shim.launcher import default_pythonpath

    code = (
        "import sys, engine.shim.shim, engine.shim.forkserver, engine_exec_native.driver; "
        "print(sorted({'dataclasses', 'inspect', 'ast'} & set(sys.modules))); "
        "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'__main__'}))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-P", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": os.pathsep.join(default_pythonpath("engine_exec_native.driver"))},
    )
    assert out.stdout == "[]\n['engine', 'engine_exec_native']\n"
