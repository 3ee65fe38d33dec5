"""The documentation site builds as `make docs` builds it: warnings are errors.

The whole site is built once into a temporary folder (about half a minute); two small
builds check that the checks bite: a broken cross-reference and a public name the
reference lacks each fail a build, naming what is wrong. Needs the docs extra, which
`make test` installs (``pip install -e '.[docs]'``).
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def sphinx(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-n", "-W", "--keep-going", "-q", "-b", "html",
         *extra, str(source), str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_the_site_builds_with_no_warnings(tmp_path):
    build = sphinx(DOCS, tmp_path / "html", "-d", str(tmp_path / "doctrees"))
    assert build.returncode == 0 and not build.stderr.strip(), build.stderr[-4000:]
    html = tmp_path / "html"
    pages = {p.stem for p in DOCS.glob("*.md")}
    assert pages <= {p.stem for p in html.glob("*.html")}, "a tutorial did not become a page"
    attention = (html / "reference" / "attention.html").read_text()
    assert 'id="avblocks.attention.gcm.GCMAttention"' in attention
    text = re.sub(r"<[^>]+>", "", attention).replace("&#39;", "'")
    assert "video: Float[Tensor, 'b cv t *vrest']" in text  # shapes as written
    index = (html / "index.html").read_text()
    assert "demo_contact_sheet.png" in index and "reference/index.html" in index


def small_site(tmp_path: Path, body: str, check_public_names: bool) -> Path:
    """A one-page site with the real configuration and extension."""
    source = tmp_path / "src"
    source.mkdir(parents=True)
    conf = DOCS / "conf.py"
    (source / "conf.py").write_text(  # the real conf, run as if from docs/
        f"__file__ = {str(conf)!r}\nexec(compile(open(__file__).read(), __file__, 'exec'))\n"
        f"avblocks_check_public_names = {check_public_names}\n")
    (source / "index.rst").write_text(f"Page\n====\n\n{body}\n")
    return source


def test_a_broken_cross_reference_fails_the_build(tmp_path):
    # as_fraction is defined in avblocks.timing: the re-export and the bare name resolve to it
    body = ".. automodule:: avblocks.timing\n\nSee :func:`avblocks.spec.as_fraction` and :func:`frame_columns`."
    good = sphinx(small_site(tmp_path / "good", body, False), tmp_path / "good" / "html")
    assert good.returncode == 0, good.stderr[-3000:]
    broken = body + " Also :class:`avblocks.timing.NoSuchThing` and :meth:`torch.Tensor.no_such_method`."
    bad = sphinx(small_site(tmp_path / "bad", broken, False), tmp_path / "bad" / "html")
    assert bad.returncode != 0
    assert "avblocks.timing.NoSuchThing" in bad.stderr and "torch.Tensor.no_such_method" in bad.stderr


def test_a_public_name_missing_from_the_reference_fails_the_build(tmp_path):
    body = ".. avblocks-modules:: avblocks.spec avblocks.timing"
    build = sphinx(small_site(tmp_path, body, True), tmp_path / "html")
    assert build.returncode != 0
    assert "public name avblocks.attention.gcm.GCMAttention" in build.stderr  # not on this page
    assert "avblocks.spec.AVSpec" not in build.stderr  # documented here
