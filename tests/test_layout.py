"""The package's shape: no module reaches into another module's private names.

The layers and the absence of cycles are import-linter contracts in pyproject.toml,
checked by `lint-imports` in scripts/test; this test covers what import-linter does not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mailbeacon

PACKAGE = Path(mailbeacon.__file__).parent


def private_uses(source: str, module: str) -> list[str]:
    """`from mailbeacon.x import _name` and `alias._name` where alias is another
    mailbeacon module: what `module` takes from other modules' private names."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("mailbeacon"):
            for name in node.names:
                if name.name.startswith("_") and not name.name.startswith("__") \
                        and node.module != module:
                    found.append(f"{node.module}.{name.name}")
                else:
                    aliases[name.asname or name.name] = f"{node.module}.{name.name}"
        elif isinstance(node, ast.Import):
            for name in node.names:
                if name.name.startswith("mailbeacon"):
                    aliases[name.asname or name.name.split(".")[0]] = name.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            found.append(f"{aliases[node.value.id]}.{node.attr}")
    return found


def test_the_check_sees_private_imports() -> None:
    source = ("from mailbeacon.insight.tags import _byte_order\n"
              "from mailbeacon.insight import stats as st\n"
              "st._hidden(1)\n"
              "from mailbeacon.model.paging import byte_order\n")
    assert private_uses(source, "mailbeacon.other") == [
        "mailbeacon.insight.tags._byte_order", "mailbeacon.insight.stats._hidden"]


def test_no_module_imports_another_modules_private_names() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        uses = private_uses(path.read_text(encoding="utf-8"), module)
        if uses:
            found[module] = uses
    assert found == {}


def test_every_package_says_what_it_holds() -> None:
    """docs/design.md lists the packages; each package's docstring says the same."""
    design = (PACKAGE.parent / "docs" / "design.md").read_text(encoding="utf-8")
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        name = init.parent.name
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), name
        assert f"  {name}/" in design, f"docs/design.md does not list {name}/"
