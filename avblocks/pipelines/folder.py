"""A pipeline's folder: one self-contained directory, written atomically, verified on load.

Layout::

    pipeline.json            {"class", "format_version", "avblocks_version", "spec",
                              "settings", "components": {name: class}, "files": {path: sha256}}
    <component>/config.json + model.safetensors     one folder per trained module

Choices:

- **Self-contained.** Every file a pipeline needs is inside the folder, named in
  ``pipeline.json``'s ``files`` with its SHA-256. Loading reads only those names, refuses a
  name that leaves the folder (``..``, an absolute path, a link pointing out), and refuses a
  missing file or one whose hash differs, naming it. Weights are safetensors, configs JSON:
  nothing is unpickled, so nothing in a folder can run code.
- **Components** are modules with the library's ``save_pretrained`` / ``from_pretrained``
  (:class:`~avblocks.saveload.SaveLoadMixin`); their classes come from a fixed table
  (each pipeline's :attr:`~avblocks.pipelines.base.Pipeline.components`), never from a name
  in a file.
- **Atomic.** :func:`write_folder` builds the whole folder under a temporary name next to the
  target and swaps it in with renames; a crash leaves either the old folder or the new one
  (and at worst a hidden ``.<name>.*`` leftover), never a mixture.
"""

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avblocks.checksums import folder_digests, mismatch
from avblocks.saveload import CheckpointError

__all__ = ["MANIFEST", "FORMAT_VERSION", "read_manifest", "verify_files", "write_folder"]

MANIFEST = "pipeline.json"
"""The manifest's file name: class, format version, spec, settings, components, hashes."""
FORMAT_VERSION = 1
"""The folder format this version writes; a folder of another version is refused."""


def _inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing names that leave the folder."""
    if not isinstance(name, str) or not name or os.path.isabs(name) or ".." in Path(name).parts:
        raise CheckpointError(f"{folder / MANIFEST}: file name {name!r} is not a path inside the folder")
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise CheckpointError(f"{path}: points outside the pipeline folder {folder}")
    return path


def read_manifest(folder: "str | os.PathLike[str]") -> dict[str, Any]:
    """``pipeline.json`` of ``folder``, checked for its keys and format version."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such pipeline folder")
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: {folder} is not a saved pipeline "
                              "(a pipeline folder holds pipeline.json and one folder per component)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    for key in ("class", "format_version", "spec", "settings", "components", "files"):
        if key not in manifest:
            raise CheckpointError(f"{path} has no {key!r} entry")
    if manifest["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format_version {manifest['format_version']}, "
                              f"this avblocks reads {FORMAT_VERSION}")
    return manifest


def verify_files(folder: "str | os.PathLike[str]", manifest: dict[str, Any]) -> None:
    """Every file ``manifest`` lists exists inside ``folder`` and has its recorded SHA-256."""
    folder = Path(folder)
    files = manifest["files"]
    if not isinstance(files, dict):
        raise CheckpointError(f"{folder / MANIFEST}: 'files' must map names to SHA-256 digests")
    for name, digest in files.items():
        if (why := mismatch(_inside(folder, name), digest, str(folder / MANIFEST))) is not None:
            raise CheckpointError(why)


def component_folder(folder: "str | os.PathLike[str]", manifest: dict[str, Any], name: str) -> Path:
    """The folder of component ``name``, which ``manifest`` must list."""
    if name not in manifest["components"]:
        raise CheckpointError(f"{Path(folder) / MANIFEST} lists no component {name!r} "
                              f"(it has {sorted(manifest['components'])})")
    return _inside(Path(folder), name)


def write_folder(folder: "str | os.PathLike[str]", manifest: dict[str, Any],
                 write_components: Callable[[Path], None]) -> Path:
    """Write a pipeline folder atomically: ``write_components(tmp)`` saves every component
    under ``tmp``; the manifest gets the SHA-256 of every file written, then ``tmp`` replaces
    ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:12]}.tmp")
    old = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:12]}.old")
    try:
        tmp.mkdir()
        write_components(tmp)
        files = folder_digests(tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest | {"files": files}, indent=2, allow_nan=False) + "\n")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return folder
