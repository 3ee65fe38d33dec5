"""Sphinx configuration: the tutorials (MyST markdown) and the API reference from docstrings.

Built by ``make docs`` with warnings as errors and nitpicky cross-references, so a broken
``:class:`...``` in a docstring, a page outside the table of contents, or a public name
(one listed in a module's ``__all__``) that the reference does not document fails the build.
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]

project = "avblocks"
author = "avblocks contributors"
copyright = "avblocks contributors, Apache-2.0"
release = version = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "avblocks_reference",
]
root_doc = "index"
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_ext", "images", "models"]
html_theme = "furo"
html_title = "avblocks"
html_static_path: list[str] = []
myst_heading_anchors = 3

nitpicky = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # `nn.LayerNorm` as written, not its repr
autodoc_default_options = {"members": True, "show-inheritance": True}
python_use_unqualified_type_names = True

# A config field's declared rules (``Annotated[int, at_least(1)]``, avblocks.config_rules) show
# in the signatures of the config dataclasses; their metadata objects are values, not classes.
nitpick_ignore_regex = [("py:class", r"(avblocks\.config_rules\.)?(Bound|ExistingPath|_Changeable)"),
                        ("py:class", r"types\.Annotated"), ("py:class", r"-?[0-9][0-9.e+-]*")]
