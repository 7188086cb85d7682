#!/usr/bin/env python3
"""Parse every Terraform file of a folder with python-hcl2 and cross-check it,
without terraform: each `.tf` (and `*.tfvars*`) must parse; every `var.X`,
`local.X`, `data.T.N` and `T.N` referenced in an expression must be declared;
every variable set in a tfvars file must exist; every variable without a
default must be set in `terraform.tfvars.example`.

Usage: parse_hcl.py [DIR ...]   (default: deploy/terraform; exit 1 on any problem)

python-hcl2 is looked up in PAR_HCL2_PATH, else in <venv>/hcl2-lib (where
`pip install --target` puts it: checkov's fork bc-python-hcl2 installs the
same `hcl2` module, so the two are kept apart), else on sys.path.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from pathlib import Path

INSTALL_HINT = (
    "run `pip install --target target/pytools/hcl2-lib "
    "-r deploy/checks/requirements-hcl2.txt` (dev/test does this)"
)


def import_hcl2():
    candidates = [os.environ.get("PAR_HCL2_PATH", ""), str(Path(sys.prefix) / "hcl2-lib")]
    for c in candidates:
        if c and Path(c, "hcl2").is_dir():
            sys.path.insert(0, c)
            break
    try:
        import hcl2  # noqa: PLC0415
        wanted = importlib.metadata.version("python-hcl2")
    except (ImportError, importlib.metadata.PackageNotFoundError):
        sys.exit(f"parse_hcl.py: python-hcl2 is not installed; {INSTALL_HINT}")
    found = getattr(hcl2, "__version__", "?")
    if found != wanted:
        sys.exit(
            f"parse_hcl.py: the `hcl2` module found ({found}, {hcl2.__file__}) is not "
            f"python-hcl2 {wanted} (checkov's bc-python-hcl2 shadows it); {INSTALL_HINT}"
        )
    return hcl2


REF = re.compile(
    r"(?<![\w.\-\"])(var|local|data|[a-z][a-z0-9]*_[a-z0-9_]+)\.([A-Za-z_][\w-]*)(?:\.([A-Za-z_][\w-]*))?"
)
# Names that look like `word.word` inside expressions but are not references.
NOT_REFS = {"count", "each", "path", "terraform", "self"}


def unquote(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] == '"' else s


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def blocks(doc: dict, kind: str):
    for entry in doc.get(kind, []):
        for name, body in entry.items():
            if name != "__is_block__":
                yield unquote(name), body


def check_dir(hcl2, folder: Path) -> list[str]:
    problems: list[str] = []
    tf_files = sorted(folder.glob("*.tf"))
    var_files = sorted(p for p in folder.iterdir() if ".tfvars" in p.name)
    if not tf_files:
        return [f"{folder}: no .tf files"]

    parsed: dict[Path, dict] = {}
    for path in tf_files + var_files:
        try:
            with path.open(encoding="utf-8") as f:
                parsed[path] = hcl2.load(f)
        except Exception as e:  # python-hcl2 raises lark errors of several kinds
            problems.append(f"{path}: does not parse: {' '.join(str(e).split())}")

    variables: dict[str, dict] = {}
    local_names: set[str] = set()
    resources: set[str] = set()
    datas: set[str] = set()
    counts: dict[str, int] = {}
    for path in tf_files:
        doc = parsed.get(path)
        if doc is None:
            continue
        for name, body in blocks(doc, "variable"):
            variables[name] = body
        for entry in doc.get("locals", []):
            local_names.update(k for k in entry if not k.startswith("__"))
        for rtype, named in blocks(doc, "resource"):
            for rname in named:
                if rname != "__is_block__":
                    resources.add(f"{rtype}.{unquote(rname)}")
        for dtype, named in blocks(doc, "data"):
            for dname in named:
                if dname != "__is_block__":
                    datas.add(f"{dtype}.{unquote(dname)}")
        for kind in ("resource", "data", "variable", "output", "locals", "module", "provider"):
            counts[kind] = counts.get(kind, 0) + len(doc.get(kind, []))

    for path in tf_files:
        doc = parsed.get(path)
        if doc is None:
            continue
        for s in strings(doc):
            if "${" not in s:
                continue
            for m in REF.finditer(s):
                head, first, second = m.group(1), m.group(2), m.group(3)
                if head in NOT_REFS:
                    continue
                if head == "var" and first not in variables:
                    problems.append(f"{path.name}: var.{first} is not declared")
                elif head == "local" and first not in local_names:
                    problems.append(f"{path.name}: local.{first} is not declared")
                elif head == "data" and second and f"{first}.{second}" not in datas:
                    problems.append(f"{path.name}: data.{first}.{second} is not declared")
                elif head not in ("var", "local", "data") and head.startswith("aws_"):
                    if f"{head}.{first}" not in resources:
                        problems.append(f"{path.name}: {head}.{first} is not declared")

    for path in var_files:
        doc = parsed.get(path)
        if doc is None:
            continue
        for key in doc:
            if key.startswith("__"):  # python-hcl2's own metadata (comments)
                continue
            if key not in variables:
                problems.append(f"{path.name}: {key} is not a declared variable")
        if path.name == "terraform.tfvars.example":
            for name, body in variables.items():
                if "default" not in body and name not in doc:
                    problems.append(f"{path.name}: required variable {name} (no default) is not set")

    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if n)
    print(
        f"{folder}: parsed {len(tf_files)} .tf + {len(var_files)} tfvars file(s) with python-hcl2 "
        f"{hcl2.__version__}: {summary}; {len(resources)} resources, {len(variables)} variables"
    )
    return sorted(set(problems))


def main(argv: list[str]) -> int:
    hcl2 = import_hcl2()
    folders = [Path(a) for a in argv] or [Path("deploy/terraform")]
    failed = False
    for folder in folders:
        if not folder.is_dir():
            print(f"{folder}: not a folder")
            failed = True
            continue
        problems = check_dir(hcl2, folder)
        for p in problems:
            print(f"  {p}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
