#!/usr/bin/env python3
"""Validate ECS task definition JSON files against botocore's own model of the
ECS RegisterTaskDefinition input (what `aws ecs register-task-definition
--cli-input-json file://...` accepts).

Walks the input shape recursively and reports every problem at once, each with
its path (e.g. `containerDefinitions[0].healthCheck.interval`): unknown keys,
wrong types (string / integer / boolean / list / structure / map), missing
required members, values outside an enum, and list / string length bounds.

Usage: validate_taskdef.py FILE.json [FILE.json ...]   (exit 1 on any problem)
"""

from __future__ import annotations

import json
import sys

try:
    import botocore.session
except ImportError:  # pragma: no cover - the message is the point
    sys.exit(
        "validate_taskdef.py: botocore is not installed; run "
        "`pip install -r deploy/checks/requirements.txt`"
    )

TYPE_NAMES = {
    dict: "structure",
    list: "list",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


def type_name(value: object) -> str:
    return TYPE_NAMES.get(type(value), type(value).__name__)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check(shape, value, path: str, problems: list[str]) -> None:
    kind = shape.type_name
    where = path or "(top level)"
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a structure ({shape.name}), got {type_name(value)}")
            return
        members = shape.members
        for key in value:
            if key not in members:
                problems.append(
                    f"{join(path, key)}: unknown key (not a member of {shape.name})"
                )
        for name in shape.required_members:
            if name not in value:
                problems.append(f"{join(path, name)}: required member is missing")
        for key, item in value.items():
            if key in members:
                check(members[key], item, join(path, key), problems)
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type_name(value)}")
            return
        bounds(shape, len(value), where, "items", problems)
        for i, item in enumerate(value):
            check(shape.member, item, f"{path}[{i}]", problems)
    elif kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a map, got {type_name(value)}")
            return
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{where}: map key {key!r} is not a string")
            check(shape.value, item, f"{path}[{key!r}]", problems)
    elif kind == "string":
        if not isinstance(value, str):
            problems.append(f"{where}: expected a string, got {type_name(value)}")
            return
        enum = shape.enum
        if enum and value not in enum:
            problems.append(f"{where}: {value!r} is not one of {', '.join(enum)}")
        bounds(shape, len(value), where, "characters", problems)
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected an integer, got {type_name(value)}")
            return
        bounds(shape, value, where, "", problems)
    elif kind in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: expected a number, got {type_name(value)}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{where}: expected a boolean, got {type_name(value)}")
    elif kind in ("timestamp", "blob"):
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            problems.append(f"{where}: expected a {kind}, got {type_name(value)}")
    else:
        problems.append(f"{where}: shape type {kind!r} is not handled by this validator")


def bounds(shape, n: int, where: str, unit: str, problems: list[str]) -> None:
    low = shape.metadata.get("min")
    high = shape.metadata.get("max")
    what = f"{n} {unit}".strip()
    if low is not None and n < low:
        problems.append(f"{where}: {what} is below the minimum {low}")
    if high is not None and n > high:
        problems.append(f"{where}: {what} is above the maximum {high}")


def validate(path: str, input_shape) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        return [f"cannot read {path}: {e}"]
    problems: list[str] = []
    check(input_shape, doc, "", problems)
    return problems


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    failed = False
    for path in argv:
        problems = validate(path, shape)
        if problems:
            failed = True
            print(f"{path}: {len(problems)} problem(s) against botocore "
                  f"{botocore.__version__} ecs RegisterTaskDefinition:")
            for p in problems:
                print(f"  {p}")
        else:
            print(f"{path}: ok (botocore {botocore.__version__} ecs RegisterTaskDefinition)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
