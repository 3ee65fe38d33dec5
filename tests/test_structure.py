"""The architecture, checked from the sources: the library never imports a recipe, a recipe
imports the library and recipes.common but never a sibling recipe, no import hides inside a
function to dodge a cycle between recipe modules, and a recipe's config module does not
pull in its trainers."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = sorted(p.name for p in (ROOT / "recipes").iterdir()
                 if p.is_dir() and p.name != "common" and (p / "__init__.py").is_file())


def imports(path: Path) -> list[tuple[str, bool]]:
    """``(module, inside a function)`` for every import in ``path``."""
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, in_function))
                found.extend((f"{child.module}.{alias.name}", in_function) for alias in child.names)
            visit(child, nested)

    visit(ast.parse(path.read_text()), False)
    return found


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_there_are_recipes_to_check():
    assert {"proav_dit", "av_dit", "read_a2v", "features"} <= set(SYSTEMS)


def test_the_library_never_imports_recipes():
    bad = [(str(p.relative_to(ROOT)), m) for p in sources("avblocks") for m, _ in imports(p)
           if m == "recipes" or m.startswith("recipes.")]
    assert not bad, bad


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_recipe_never_imports_a_sibling_recipe(system):
    bad = []
    for path in sources(f"recipes/{system}"):
        for module, _ in imports(path):
            parts = module.split(".")
            if parts[0] == "recipes" and len(parts) > 1 and parts[1] not in (system, "common"):
                bad.append((str(path.relative_to(ROOT)), module))
    assert not bad, bad


def test_recipes_common_imports_no_recipe():
    bad = [(str(p.relative_to(ROOT)), m) for p in sources("recipes/common") for m, _ in imports(p)
           if m.startswith("recipes.") and not m.startswith("recipes.common")]
    assert not bad, bad


def test_no_function_level_import_of_a_recipe_module():
    """Configs live in their own modules, so no cycle needs dodging inside a function."""
    bad = [(str(p.relative_to(ROOT)), m) for p in sources("recipes") for m, inside in imports(p)
           if inside and m.startswith("recipes.")]
    assert not bad, bad


@pytest.mark.parametrize("system", [s for s in SYSTEMS if (ROOT / "recipes" / s / "config.py").is_file()])
def test_a_config_module_imports_no_trainer(system):
    code = (f"import sys, recipes.{system}.config; "
            f"print(sorted(m for m in sys.modules if m.startswith('recipes.{system}.')))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert eval(loaded.stdout) == [f"recipes.{system}.config"], loaded.stdout
