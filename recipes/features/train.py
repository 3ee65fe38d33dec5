"""Train the small feature network for Fréchet / kernel distances on the synthetic set.

    avblocks run features.train [--config FILE] [key=value ...]
    python -m recipes.features.train optim.steps=400 run.output_dir=outputs/features

What it learns, what it writes and why: :mod:`recipes.common.feature_net`.
"""

from recipes.common.config import parse_cli
from recipes.common.feature_net import FeatureRecipe, train
from recipes.common.watch import tensorboard_hint


def main(argv=None) -> dict:
    cfg = parse_cli(FeatureRecipe, argv, description=__doc__.splitlines()[0])
    if cfg.run.tensorboard:
        print(tensorboard_hint(cfg.run.output_dir), flush=True)
    return train(cfg)[1]


if __name__ == "__main__":
    main()
