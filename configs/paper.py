"""The paper's protocol (MetaDiff, AAAI 2024) on miniImageNet and tieredImageNet, shared by the four
`configs/{mini,tiered}_imagenet_{resnet12,conv4}.py` files; each of them is this with its dataset and backbone.

As the reference code does (docs/reference.md): the backbone pretrained on the base classes with
MetaOptNet's recipe (SGD 0.1, Nesterov momentum 0.9, weight decay 5e-4, batch 128, 100 epochs, rate / 10 at
epochs 60 / 80 / 90; random crop with 8 pixels of padding and horizontal flips); MetaDiff with T = 1000
linear betas, the reference's gradient condition 2K (W - p), 8 episodes a batch, Adam 1e-4 with L2 weight
decay 5e-4, EMA 0.9999 (a plain copy for the first 2,000 steps), the deterministic DDPM-mean sampler over all
1,000 steps from noise, and 600 test episodes of 5 ways and 15 queries a class. Features are not rescaled
(the reference does not rescale them). The reference's number of meta-training steps is not documented;
30,000 steps is this project's choice (the EMA then averages over the last ~10,000).

The `quick` variant (`--config configs/<file>.py:quick`) runs the same path in about a minute on tiny data:
one pretraining epoch of a narrow backbone, 20 meta-training steps, T = 50, 10 test episodes, 1-shot with 3
queries. Tests run it end to end on fake files; it measures nothing.
"""

import ml_collections

from configs import default


def paper_config(dataset: str, backbone: str, variant: str = "") -> ml_collections.ConfigDict:
    config = default.get_config()
    config.dataset.name = dataset
    config.dataset.config = {"mini_imagenet": "pickle", "tiered_imagenet": "84px"}[dataset]
    config.dataset.workers = 0
    # tieredImageNet's 448,695 training images (9.5 GB) are read from disk as episodes need them.
    config.dataset.in_memory = dataset != "tiered_imagenet"
    config.backbone.name = backbone

    config.pretrain.epochs = 100
    config.pretrain.batch_size = 128
    config.pretrain.learning_rate = 0.1
    config.pretrain.milestones = (0.6, 0.8, 0.9)
    config.pretrain.shift = 8
    config.pretrain.flip = True
    config.pretrain.validation_episodes = 600

    config.metadiff.tcunet.condition = "gradient"
    config.metadiff.tcunet.anchor = "zero"
    config.metadiff.unit_scale_targets = False
    config.metadiff.schedule = "linear"
    config.metadiff.timesteps = 1000
    config.metadiff.steps = 30_000
    config.metadiff.batch_size = 8
    config.metadiff.learning_rate = 1e-4
    config.metadiff.weight_decay = 5e-4
    config.metadiff.ema_decay = 0.9999
    config.metadiff.ema_start = 2000
    config.metadiff.patience = None  # every step trained and the final EMA parameters tested, as the reference does
    config.metadiff.evaluate = "final"
    config.metadiff.sampler.method = "ddpm_mean"
    config.metadiff.sampler.start = "noise"
    config.episodes.test_episodes = 600
    config.checkpoint.validation_episodes = 600

    if variant == "quick":
        config.dataset.strict = False  # the tests' fake files are small
        config.backbone.width = 8
        config.pretrain.epochs = 1
        config.pretrain.batch_size = 32
        config.pretrain.validation_episodes = 5
        config.metadiff.steps = 20
        config.metadiff.timesteps = 50  # the linear schedule needs T > 20
        config.metadiff.batch_size = 4
        config.metadiff.ema_start = 5
        config.episodes.shots = (1,)
        config.episodes.queries = 3
        config.episodes.test_episodes = 10
        config.checkpoint.validation_episodes = 0
        config.rivals.validation_episodes = 10
        config.rivals.anil.steps = 10
        config.rivals.ridge.draws_per_class = 5
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; the one variant is 'quick' (--config {dataset}...py:quick).")
    return config
