"""The API reference's Sphinx extension: pages list modules, the build checks completeness.

- ``avblocks-modules`` (directive): documents the named modules (``automodule`` with their
  members, ``__all__`` respected); a package named there stands for itself (its docstring)
  and every public submodule under it, so a new module appears without touching the page.
- Completeness: every name in any ``avblocks`` module's ``__all__`` (and, for a module
  without ``__all__``, every public class and function defined in it) must be documented
  somewhere in the reference, under its own module or under the module that defines it;
  otherwise the build warns (an error under ``-W``), naming the name and the fix.
- Docstrings: ``Args:`` / ``Returns:`` sections of functions and classes are read by
  napoleon's Google-style parser; property and attribute docstrings stay prose (napoleon
  would read ``"Seconds in a clip, exactly: ..."`` as a type followed by a description).
- Signatures: jaxtyping annotations print as written, ``Float[Tensor, 'b c t h w']``; a
  dataclass ``default_factory`` default prints as ``...``.
- Cross-references: a name resolves as the module that wrote it sees it, so a reference to
  an imported or re-exported name (``:class:`MelConfig``` in a module that imports it,
  ``avblocks.diffusion.FlowMatching``) links to where the object is documented. A private
  base class or a type variable is named without a link. A reference into another package
  (``torch.nn.Module``) cannot be linked offline: it prints as text when the object
  imports, and warns (so it fails) when it does not. Anything else unresolved warns.
"""

import importlib
import importlib.util
import inspect
import pkgutil
import re
from types import ModuleType
from typing import TypeVar

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.ext.napoleon import Config as NapoleonConfig
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)

LIBRARY = "avblocks"
NAPOLEON = NapoleonConfig(napoleon_numpy_docstring=False, napoleon_use_rtype=False,
                          napoleon_attr_annotations=False)  # the signature shows the types


def public_modules(name: str) -> list[str]:
    """``name`` and, for a package, every submodule under it whose path has no ``_`` part."""
    module = importlib.import_module(name)
    names = [name]
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, f"{name}."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                names.append(info.name)
    return names


def public_names(module: ModuleType) -> list[str]:
    """``__all__``, or the public classes and functions the module defines itself."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [n for n, obj in vars(module).items()
            if not n.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
            and obj.__module__ == module.__name__]


def import_object(path: str):
    """The object a dotted path names (a module, then attributes), or ``None``."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        except Exception:  # a module that fails to import names nothing
            return None
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


class ModulesDirective(SphinxDirective):
    """``avblocks-modules`` followed by module or package names (space separated)."""

    has_content = False
    required_arguments = 1
    optional_arguments = 100

    def run(self) -> list[nodes.Node]:
        lines = []
        for name in self.arguments:
            for module in public_modules(name):
                is_package = hasattr(importlib.import_module(module), "__path__")
                lines += [f".. automodule:: {module}"]
                # a package re-exports its submodules' names: document them once, where defined
                lines += ["   :no-members:", ""] if is_package else [""]
        content = StringList(lines, source=self.get_source_info()[0])
        holder = nodes.section()
        holder.document = self.state.document
        nested_parse_with_titles(self.state, content, holder)
        return holder.children


class ExportsDirective(SphinxDirective):
    """``avblocks-exports`` followed by one module: a table of its ``__all__``, each name linked
    to where it is documented, with the first line of its docstring."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module = importlib.import_module(self.arguments[0])
        rows = []
        for name in module.__all__:
            doc = (getattr(getattr(module, name), "__doc__", None) or "").strip()
            summary = doc.split("\n\n")[0].replace("\n", " ")
            summary = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"``{m[1].rsplit('.', 1)[-1]}``", summary)
            rows += [f"   * - :py:obj:`~{module.__name__}.{name}`", f"     - {summary}"]
        lines = [".. list-table::", "   :widths: 1 3", ""] + rows
        holder = nodes.section()
        holder.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source=self.get_source_info()[0]), holder)
        return holder.children


def google_sections(app: Sphinx, what: str, name: str, obj, options, lines: list[str]) -> None:
    if what in ("function", "method", "class", "exception", "module"):
        lines[:] = GoogleDocstring(lines, NAPOLEON, None, what, name, obj).lines()


def readable_signature(app: Sphinx, what, name, obj, options, signature, return_annotation):
    """``jaxtyping.Float[Tensor, 'b c']`` names torch's tensor by its bare name: qualify it.
    A default that prints as ``<factory>`` (a dataclass ``default_factory``) or another
    ``<...>`` repr is not Python: show ``...`` so the signature still parses."""
    def fix(text):
        if not text:
            return text
        text = re.sub(r"(?<![\w.])Tensor\b", "torch.Tensor", text)
        return re.sub(r"(=\s*)<[^<>]*>", r"\1...", text)
    return fix(signature), fix(return_annotation)


def documented(env) -> set[str]:
    return set(env.get_domain("py").objects)


def documented_as(obj, path: str, known: set[str]) -> list[str]:
    """The names under which the object ``path`` names is documented: its defining module
    and qualified name, or (a constant) any documented name of the same object."""
    names = [path]
    if hasattr(obj, "__qualname__") and hasattr(obj, "__module__"):
        names.append(f"{obj.__module__}.{obj.__qualname__}")
    last = path.rsplit(".", 1)[-1]
    names += [d for d in known if d.rsplit(".", 1)[-1] == last and import_object(d) is obj]
    return [name for name in names if name in known]


def check_public_names(app: Sphinx, env) -> None:
    """Warn for every public name the reference does not document."""
    if not app.config.avblocks_check_public_names:
        return  # a build of a few pages (a test fixture)
    known = documented(env)
    for module_name in public_modules(LIBRARY):
        module = importlib.import_module(module_name)
        for name in public_names(module):
            obj = getattr(module, name, None)
            owner = getattr(obj, "__module__", None) if inspect.isclass(obj) or callable(obj) else None
            if owner and owner.split(".")[0] != LIBRARY:
                continue  # another package's object re-exported for convenience (torch.Tensor)
            if obj is None or not documented_as(obj, f"{module_name}.{name}", known):
                logger.warning(
                    f"public name {module_name}.{name} is not in the API reference: give it "
                    "a docstring (for a constant, a string on the line after it) and make "
                    "sure a page in docs/reference/ names its module",
                    type="avblocks", subtype="reference")


def resolve_reference(app: Sphinx, env, node, contnode):
    """What Sphinx's own lookup missed: a name as the module that wrote it sees it, a
    re-export, a private base or type variable (text, no link), another package's object."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip("~.")
    module, cls = node.get("py:module"), node.get("py:class")
    candidates = [target]
    if module:
        candidates = ([f"{module}.{cls}.{target}"] if cls else []) + [f"{module}.{target}", target]
    known = documented(env)
    for path in candidates:
        obj = import_object(path.split("[")[0])
        if obj is None:
            continue
        if isinstance(obj, TypeVar):
            return contnode
        owner = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None)
        if (owner or path).split(".")[0] != LIBRARY:
            return contnode  # another package's object: it exists, it has no page here
        found = documented_as(obj, path, known)
        if found:
            return env.get_domain("py").resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], found[-1], node, contnode)
        qualname = f"{owner}.{getattr(obj, '__qualname__', '')}"
        if any(part.startswith("_") for part in qualname.split(".")):
            return contnode  # a private base class: named, not linked
        return None  # ours, public, and undocumented: the warning says so
    return None


def drop_foreign_docstrings(app: Sphinx, what: str, name: str, obj, options, lines: list[str]) -> None:
    """An undocumented override (``forward``) inherits its base's docstring; torch's
    ``Module.forward`` text is about torch, not this method: drop it, keep the signature."""
    if what != "method" or getattr(obj, "__doc__", None):
        return
    owner, attr = name.rsplit(".", 1)
    cls = import_object(owner)
    for base in getattr(cls, "__mro__", ()):
        if getattr(vars(base).get(attr), "__doc__", None):
            if base.__module__.split(".")[0] != LIBRARY:
                lines[:] = []
            return


def setup(app: Sphinx) -> dict:
    app.add_config_value("avblocks_check_public_names", True, "env")
    app.add_directive("avblocks-modules", ModulesDirective)
    app.add_directive("avblocks-exports", ExportsDirective)
    app.connect("autodoc-process-docstring", drop_foreign_docstrings)
    app.connect("autodoc-process-docstring", google_sections)
    app.connect("autodoc-process-signature", readable_signature)
    app.connect("env-check-consistency", check_public_names)
    app.connect("missing-reference", resolve_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
