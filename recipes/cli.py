"""The ``avblocks`` command: list, copy and run the recipes, and sample a saved pipeline.

    avblocks ls                                   # recipes and their shipped configs
    avblocks cp proav_dit/dit_tiny my_dit.yaml    # copy a config to edit it
    avblocks run proav_dit.train_dit --config dit_tiny optim.steps=100
    avblocks run proav_dit.train_dit --config my_dit.yaml
    avblocks sample outputs/demo/pipeline --labels 0 1 --out clip.mp4
    avblocks sample outputs/demo/pipeline --audio speech.wav --out a2v.mp4
    avblocks sample outputs/read_a2v_tiny/pipeline --audio speech.wav --reference face.png --out talk.mp4

torchtune's habit: the recipes and their YAML configs ship in the wheel, so the same command
works from anywhere once avblocks is installed. Every recipe takes ``--config`` (a shipped
config's name or a file) and ``key=value`` overrides. A wrong key, a missing file or folder,
or media that cannot be used is one line naming it (exit status 2), not a traceback
(``AVBLOCKS_TRACEBACK=1`` shows the traceback).
"""

import argparse
import ast
import importlib
import inspect
import os
import shutil
import sys
from pathlib import Path

RECIPES_DIR = Path(__file__).parent
SYSTEMS = ("proav_dit", "av_dit", "read_a2v", "dual_stream", "features")


def recipes() -> dict[str, str]:
    """``{"system.module": first docstring line}`` for every recipe module with a ``main``,
    read from the sources (nothing is imported)."""
    found = {}
    for system in SYSTEMS:
        for path in sorted((RECIPES_DIR / system).glob("*.py")):
            if path.name.startswith("_"):
                continue
            tree = ast.parse(path.read_text())
            if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
                doc = (ast.get_docstring(tree) or "").strip().splitlines()
                found[f"{system}.{path.stem}"] = doc[0] if doc else ""
    return found


def configs() -> dict[str, Path]:
    """``{"system/name": path}`` of every shipped YAML config."""
    return {f"{system}/{p.stem}": p for system in SYSTEMS
            for p in sorted((RECIPES_DIR / system / "configs").glob("*.yaml"))}


def resolve_config(recipe: str, name: str) -> Path:
    """A config file: a path that exists, or a shipped config's name (``dit_tiny`` for the
    recipe's own system, or ``system/name``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = configs()
    system = recipe.split(".")[0]
    for key in (name.removesuffix(".yaml"), f"{system}/{name.removesuffix('.yaml')}"):
        if key in shipped:
            return shipped[key]
    raise FileNotFoundError(f"config {name!r}: no such file, and not a shipped config "
                            f"(avblocks ls lists them: {', '.join(shipped)})")


def cmd_ls(args) -> int:
    print("recipes (avblocks run NAME --config CONFIG [key=value ...]):")
    for name, doc in recipes().items():
        print(f"  {name:<30} {doc if len(doc) <= 90 else doc[:87] + '...'}")
    print("\nconfigs (avblocks cp NAME DEST to edit one):")
    for name, path in configs().items():
        print(f"  {name:<30} {path}")
    return 0


def cmd_cp(args) -> int:
    shipped = configs()
    if args.config not in shipped:
        raise FileNotFoundError(f"config {args.config!r} is not a shipped config (have: {', '.join(shipped)})")
    dest = Path(args.dest)
    if dest.is_dir():
        dest = dest / shipped[args.config].name
    if dest.exists() and not args.force:
        raise FileExistsError(f"{dest} exists (use --force to overwrite)")
    shutil.copyfile(shipped[args.config], dest)
    print(f"copied {args.config} to {dest}")
    return 0


def cmd_run(args) -> int:
    known = recipes()
    if args.recipe not in known:
        raise ValueError(f"no recipe {args.recipe!r} (avblocks ls lists them: {', '.join(known)})")
    argv = list(args.arguments)  # the recipe parses them; a config's name becomes its file
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            argv[i + 1] = str(resolve_config(args.recipe, argv[i + 1]))
        elif arg.startswith("--config="):
            argv[i] = f"--config={resolve_config(args.recipe, arg.split('=', 1)[1])}"
    module = importlib.import_module(f"recipes.{args.recipe}")
    module.main(argv)
    return 0


def cmd_sample(args) -> int:
    from avblocks.pipelines import Pipeline, ReadPipeline

    pipe = Pipeline.from_pretrained(args.folder, device=args.device)
    kind, out = type(pipe).__name__, Path(args.out)
    if isinstance(pipe, ReadPipeline):
        if args.audio is None or args.reference is None:
            raise ValueError(f"{args.folder} holds a {kind}: give --audio (a file with sound) and --reference "
                             "(a picture or a video)")
        pipe.stream(args.audio, args.reference, out, frames=args.frames, steps=args.steps, seed=args.seed)
        print(out)
        return 0
    given = {"audio": args.audio, "video": args.video, "labels": args.labels or None,
             "reference": args.reference, "frames": args.frames}
    accepted = inspect.signature(pipe.__call__).parameters
    refused = [f"--{name}" for name, value in given.items() if value is not None and name not in accepted]
    if refused:
        raise ValueError(f"{args.folder} holds a {kind}, which takes no {', '.join(refused)}")
    options = {name: value for name, value in given.items() if value is not None}
    if args.steps is not None:
        options["steps"] = args.steps
    clips = pipe(**options, seed=args.seed)
    written = clips.save(out)
    clips.preview(out.with_suffix(".png"))
    for path in written if isinstance(written, list) else [written]:
        print(path)
    print(out.with_suffix(".png"))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avblocks", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("ls", help="list the recipes and their configs").set_defaults(fn=cmd_ls)
    cp = sub.add_parser("cp", help="copy a shipped config to edit it")
    cp.add_argument("config", help="system/name, e.g. proav_dit/dit_tiny")
    cp.add_argument("dest", help="a file or a folder")
    cp.add_argument("--force", action="store_true", help="overwrite DEST")
    cp.set_defaults(fn=cmd_cp)
    run = sub.add_parser("run", help="run a recipe")
    run.add_argument("recipe", help="system.module, e.g. proav_dit.train_dit")
    run.add_argument("arguments", nargs=argparse.REMAINDER,
                     help="[--config NAME_OR_FILE] [key=value ...] (dotted keys), as the recipe takes them")
    run.set_defaults(fn=cmd_run)
    sample = sub.add_parser("sample", help="sample mp4 files from a saved pipeline folder")
    sample.add_argument("folder", help="a pipeline folder (pipeline.json + components)")
    sample.add_argument("--out", default="sample.mp4", help="mp4 path (several clips: stem_XX.mp4)")
    sample.add_argument("--labels", type=int, nargs="*", default=None, help="classes, one clip each")
    sample.add_argument("--audio", default=None, help="a file with sound: audio-to-video / READ")
    sample.add_argument("--video", default=None, help="a video file: video-to-audio")
    sample.add_argument("--reference", default=None, help="READ: a picture or video (first frame)")
    sample.add_argument("--frames", type=int, default=None, help="READ: frames (default: the audio's)")
    sample.add_argument("--steps", type=int, default=None, help="sampling steps (default: the folder's)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--device", default="auto",
                        help="auto (the GPU when CUDA is there), cpu, cuda or cuda:N")
    sample.set_defaults(fn=cmd_sample)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as e:
        if os.environ.get("AVBLOCKS_TRACEBACK") == "1":
            raise
        print(f"avblocks {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
