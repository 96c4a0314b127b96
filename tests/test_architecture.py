"""The package's layout: layers that import only downward, no import cycle, no private name used
outside the module that defines it.

Layers, lowest first (a module may import from its own layer and the layers below):

0. foundations: ``checks``, ``datasets``
1. model specification: ``formula``, ``plain_formula``, ``model_frame``, ``design``
2. criterion: ``criterion``
3. optimizer: ``optimizer``
4. fit: ``display`` (how results print), ``results`` (the fitted model), ``fit`` (``lmer``: the
   steps composed)
5. inference, other estimators and their pictures: ``anova``, ``resampling``, ``intervals``,
   ``rlrt``, ``fixed_effect_tests``, ``separate_fits``, ``comparison``, ``prediction``, ``simulate``,
   ``structures``, ``gibbs``, ``plots`` (which ``LmList.plot`` calls), ``diagnostics``
6. the package's face: ``__init__``
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lmmnotes"
LAYERS = [
    {"checks", "datasets"},
    {"formula", "plain_formula", "model_frame", "design"},
    {"criterion"},
    {"optimizer"},
    {"display", "results", "fit"},
    {"anova", "resampling", "intervals", "rlrt", "fixed_effect_tests", "separate_fits", "comparison", "prediction", "simulate",
     "structures", "gibbs", "plots", "diagnostics"},
    {"__init__"},
]
LAYER = {name: k for k, names in enumerate(LAYERS) for name in names}
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{module}.py").read_text())


def imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported lmmnotes module, names imported from it) for every import in ``module``, at any depth."""
    out = []
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.append((node.module.split(".")[0], [a.name for a in node.names]))
            else:  # from . import anova, datasets
                out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmmnotes"):
            out.append(((node.module.split(".") + [""])[1] or node.names[0].name, [a.name for a in node.names]))
    return out


def test_every_module_has_a_layer():
    assert set(MODULES) <= set(LAYER), f"add {sorted(set(MODULES) - set(LAYER))} to LAYERS"


@pytest.mark.parametrize("module", MODULES)
def test_imports_go_down(module):
    upward = [target for target, _ in imports(module) if LAYER[target] > LAYER[module]]
    assert not upward, f"{module} (layer {LAYER[module]}) imports from higher layers: {upward}"


def test_no_import_cycle():
    graph = {m: {t for t, _ in imports(m) if t != m} for m in MODULES if m != "__init__"}
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("module", MODULES)
def test_no_private_name_is_imported_from_another_module(module):
    private = [f"{target}.{name}" for target, names in imports(module) for name in names
               if name.startswith("_") and not name.startswith("__")]
    assert not private, f"{module} imports private names {private}"


@pytest.mark.parametrize("module", MODULES)
def test_no_private_attribute_of_another_module_is_used(module):
    """``obj._name`` only where this module defines ``_name`` (a method, function or attribute of its
    own): a private method of another module's class is not called from here."""
    module_tree = tree(module)
    defined = {n.name for n in ast.walk(module_tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    defined |= {t.attr for n in ast.walk(module_tree) if isinstance(n, ast.Assign | ast.AnnAssign)
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Attribute)}
    defined |= {t.id for n in ast.walk(module_tree) if isinstance(n, ast.AnnAssign) for t in [n.target]
                if isinstance(t, ast.Name)}
    used = {n.attr for n in ast.walk(module_tree) if isinstance(n, ast.Attribute)
            and n.attr.startswith("_") and not n.attr.startswith("__")}
    assert not used - defined, f"{module} uses private attributes defined elsewhere: {sorted(used - defined)}"


@pytest.mark.parametrize("module", ["resampling", "comparison", "fixed_effect_tests", "separate_fits", "gibbs"])
def test_module_names_are_not_shadowed_by_functions(module):
    import importlib
    import types

    import lmmnotes

    imported = importlib.import_module(f"lmmnotes.{module}")
    assert isinstance(imported, types.ModuleType) and isinstance(getattr(lmmnotes, module), types.ModuleType)


def test_the_functions_keep_their_names_at_the_top():
    import lmmnotes

    for name in ("bootstrap", "lrt", "compare", "kenward_roger", "lmlist", "lmer", "refit_responses"):
        assert callable(getattr(lmmnotes, name))
