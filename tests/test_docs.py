"""Every tutorial in docs/ is executed: its ```python blocks run in order, in one namespace.

Pages run from a scratch copy of the repository root (``docs/`` and ``benchmarks/`` linked
read-only, ``docs/images/`` empty), as a reader runs them from a checkout. Every picture in
the docs is made by a page's code: each PNG a page writes into ``docs/images/`` must be
non-trivial (not blank, not tiny) and match the committed copy (same size, same pixels up
to font and rounding noise), so a committed picture that the code no longer makes fails.

After a change that moves a picture on purpose: ``make docs-images`` (this test with
``AVBLOCKS_DOCS_IMAGES=update``) writes the new pictures into docs/images/.
"""

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
IMAGES = DOCS / "images"
PAGES = sorted(p for p in DOCS.glob("*.md") if "```python" in p.read_text())
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.png)\)")
UPDATE = os.environ.get("AVBLOCKS_DOCS_IMAGES") == "update"

MIN_SIDE = 200  # pixels: a figure smaller than this is not a figure
MIN_DRAWN = 0.03  # share of pixels that differ from the background colour
MAX_MEAN_DIFF = 1.0  # mean absolute difference (0-255) to the committed copy
MAX_CHANGED = 0.003  # share of pixels that may differ by more than CHANGED_BY
CHANGED_BY = 48


def scratch_root(tmp_path: Path) -> Path:
    """The repository as a page sees it: docs/ and benchmarks/ linked, docs/images/ empty."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for entry in DOCS.iterdir():
        if entry.name not in ("images", "_build"):
            (docs / entry.name).symlink_to(entry)
    (docs / "images").mkdir()
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    return tmp_path


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def check_picture(made: Path, committed: Path) -> None:
    new = pixels(made)
    h, w, _ = new.shape
    assert min(h, w) >= MIN_SIDE, f"{made.name}: {w}x{h} pixels is too small to read"
    colours, counts = np.unique(new.reshape(-1, 3), axis=0, return_counts=True)
    drawn = 1 - counts.max() / counts.sum()
    assert drawn >= MIN_DRAWN, (f"{made.name}: {drawn:.1%} of the pixels differ from the "
                                f"background {tuple(colours[counts.argmax()])}: blank")
    assert committed.is_file(), f"{made.name} is made but not committed: run `make docs-images`"
    old = pixels(committed)
    assert old.shape == new.shape, (f"{made.name}: made {w}x{h}, committed "
                                    f"{old.shape[1]}x{old.shape[0]}: run `make docs-images`")
    diff = np.abs(new - old).max(axis=-1)
    changed = (diff > CHANGED_BY).mean()
    assert diff.mean() <= MAX_MEAN_DIFF and changed <= MAX_CHANGED, (
        f"{made.name} differs from the committed copy (mean difference {diff.mean():.2f}, "
        f"{changed:.2%} of pixels changed): the picture is stale; run `make docs-images`")


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_tutorial_runs(page, tmp_path, monkeypatch):
    root = scratch_root(tmp_path)
    monkeypatch.chdir(root)
    namespace = {"__name__": f"docs.{page.stem}"}
    for i, code in enumerate(BLOCK.findall(page.read_text())):
        exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)

    made = {p.name: p for p in (root / "docs" / "images").iterdir()}
    shown = {Path(link).name for link in IMAGE_LINK.findall(page.read_text())}
    assert shown <= set(made), f"{page.name} shows {sorted(shown - set(made))} but does not make them"
    for name, path in sorted(made.items()):
        if UPDATE:
            shutil.copyfile(path, IMAGES / name)
        check_picture(path, IMAGES / name)


def test_every_committed_picture_is_made_by_a_page():
    code = "".join(code for page in PAGES for code in BLOCK.findall(page.read_text()))
    orphans = [p.name for p in IMAGES.iterdir() if f"docs/images/{p.name}" not in code]
    assert not orphans, f"no page's code makes {orphans}: delete them or make them in a page"


@pytest.mark.parametrize("document", [ROOT / "README.md", ROOT / "benchmarks" / "README.md",
                                      *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_picture_shown_exists(document):
    missing = [link for link in IMAGE_LINK.findall(document.read_text())
               if not (document.parent / link).is_file()]
    assert not missing, f"{document.name} links pictures that do not exist: {missing}"


def test_the_picture_check_fails_blank_stale_and_resized_pictures(tmp_path):
    rng = np.random.default_rng(0)
    picture = np.full((300, 400, 3), 255, np.uint8)
    picture[50:250, 50:350] = rng.integers(0, 255, (200, 300, 3))
    committed, made = tmp_path / "committed.png", tmp_path / "made.png"
    Image.fromarray(picture).save(committed)
    Image.fromarray(picture).save(made)
    check_picture(made, committed)  # the same picture passes

    Image.fromarray(np.full_like(picture, 255)).save(made)
    with pytest.raises(AssertionError, match="blank"):
        check_picture(made, committed)
    stale = picture.copy()
    stale[60:120, 60:200] = 0  # a changed region: 2% of the picture
    Image.fromarray(stale).save(made)
    with pytest.raises(AssertionError, match="stale"):
        check_picture(made, committed)
    Image.fromarray(picture[:, :380]).save(made)
    with pytest.raises(AssertionError, match="made 380x300"):
        check_picture(made, committed)
