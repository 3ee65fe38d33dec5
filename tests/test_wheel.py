"""What `pip install` gives a user, tested as a user would meet it: the wheel built from this
checkout, installed into a fresh virtual environment, used from a folder outside the repo.

The fresh environment reuses the already-installed torch (a ``.pth`` file points at this
environment's site-packages, added after the wheel's own files, so ``avblocks`` and
``recipes`` come from the wheel) and installs the wheel with ``--no-deps``.
"""

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from avblocks.data import read_clip

ROOT = Path(__file__).resolve().parents[1]
DEMO = ["per_class=1", "sample_steps=2", "feature_steps=2", "progress=false",
        "autoencoder_overrides=[data.num_clips=8, data.num_frames=8, data.size=16, model.hidden_channels=16, "
        "model.depth=1, model.heads=2, model.groups=2, optim.steps=2, optim.warmup=1, optim.batch_size=2, run.eval_clips=2]",
        "dit_overrides=[model.hidden_size=32, model.depth=1, model.num_heads=2, optim.steps=2, optim.warmup=1, optim.batch_size=4]",
        "feature_overrides=[model.num_frames=8, model.size=16, 'model.channels=[8, 8, 8]', model.dim=16, "
        "model.temporal_channels=16, model.groups=4, optim.batch_size=4, data.held_out_clips=8]"]


def readme_three_lines() -> str:
    """The README's three-line example, exactly as a user copies it."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A trained model in three lines"):]
    block = section[section.index("```python\n") + len("```python\n"):]
    return block[: block.index("```")]


def run(args: list, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """``(bin folder of a fresh venv holding the wheel, a working folder outside the repo)``."""
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a copy of the checkout's files: setuptools builds in the source tree, and a
    # stale build/ folder there could slip removed modules into the wheel
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    source = tmp / "source"
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist",
         source], cwd=tmp)
    wheels = list((tmp / "dist").glob("avblocks-*.whl"))
    assert len(wheels) == 1
    env = tmp / "venv"
    venv.create(env, with_pip=True)
    bin_dir = env / "bin"
    site = Path(run([bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=tmp).stdout.strip())
    (site / "zz_reuse_torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheels[0]], cwd=tmp)
    work = tmp / "work"
    work.mkdir()
    return bin_dir, work


def test_the_wheel_holds_the_library_the_recipes_and_their_configs(installed):
    bin_dir, work = installed
    where = run([bin_dir / "python", "-c", "import avblocks, recipes.cli; print(avblocks.__file__); "
                 "print(recipes.cli.__file__)"], cwd=work).stdout.split()
    assert all("/venv/lib/" in w for w in where), where  # from the wheel, not from the checkout
    listing = run([bin_dir / "avblocks", "ls"], cwd=work).stdout
    for name in ("proav_dit.train_dit", "proav_dit.demo", "av_dit.train", "read_a2v.train",
                 "proav_dit/dit_tiny", "read_a2v/tiny"):
        assert name in listing
    run([bin_dir / "avblocks", "cp", "proav_dit/dit_tiny", "mine.yaml"], cwd=work)
    assert "patch: [1, 16]" in (work / "mine.yaml").read_text()


def test_train_sample_and_the_readme_three_lines_outside_the_repo(installed):
    bin_dir, work = installed
    printed = run([bin_dir / "avblocks", "run", "proav_dit.demo", *DEMO], cwd=work).stdout
    manifest = json.loads((work / "outputs" / "demo" / "pipeline" / "pipeline.json").read_text())
    assert manifest["class"] == "ProAVDiTPipeline"
    lines = readme_three_lines()
    assert lines.count("\n") == 3 and "outputs/demo/pipeline" in lines
    assert lines.strip().splitlines()[1] in printed  # the demo prints the lines it documents
    (work / "three_lines.py").write_text(lines)
    run([bin_dir / "python", "three_lines.py"], cwd=work)
    for i in range(4):
        clip = read_clip(work / f"clip_{i:02d}.mp4", num_frames=8, fps=8, sample_rate=16000)
        assert clip.video.shape == (3, 8, 16, 16) and clip.audio.shape == (1, 16000)
    run([bin_dir / "avblocks", "sample", "outputs/demo/pipeline", "--labels", "2", "--steps", "2",
         "--out", "s.mp4"], cwd=work)
    assert read_clip(work / "s.mp4", num_frames=8, fps=8, sample_rate=16000).video.shape[1] == 8


def test_mistakes_are_one_line_naming_what_is_wrong(installed):
    bin_dir, work = installed
    for args, named in ((["sample", "no_such_folder"], "no_such_folder"),
                        (["run", "proav_dit.train_dit", "--config", "dit_tiny", "optim.stepz=3"], "stepz"),
                        (["run", "proav_dit.nothing"], "proav_dit.nothing"),
                        (["run", "proav_dit.train_dit", "--config", "missing.yaml"], "missing.yaml")):
        done = subprocess.run([str(bin_dir / "avblocks"), *args], cwd=work, capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(work)})
        assert done.returncode == 2 and "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], done.stderr
