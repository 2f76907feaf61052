"""The default run on a laptop CPU: the embedded KanjiVG glyph dataset at 28 x 28, Conv-4, MetaDiff.

    python -m launch.main --config configs/default.py --workdir runs/default

Builds the dataset if missing (3-5 minutes on 2 cores, reused afterwards), pretrains Conv-4 on its 64
training classes, caches features of every split, meta-trains MetaDiff for 5-way 1-shot and 5-shot, and
evaluates both on 600 fixed test episodes beside the non-diffusion rivals on the same features and episodes:
13.8 minutes from a fresh clone on 2 cores (docs/performance.md). Override any key on the
command line, e.g. `--config.pretrain.epochs=10`. Results are on renders of glyph stroke data, not Omniglot.

The sections that configure a library object (pretrain, metadiff's training, each denoiser's section,
metadiff.sampler, metadiff.query_loss, each rival's section, checkpoint, baseline) take their keys and
defaults from that object's dataclass (metadiff_jax.config_dict.section): the defaults are written once, in
the library, with their reasons; this file sets only where the project's default differs.
"""

import ml_collections

from metadiff_jax import checkpoints, config_dict, denoiser, pretrain, rivals, train
from metadiff_jax import sampler as sampler_lib
from metadiff_jax.baselines import gradient

# A Flax module's own dataclass fields that are not settings.
MODULE_FIELDS = ("dim", "parent", "name")


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    # "metadiff", or a baseline trained on image episodes (configs/baselines/): maml, fomaml, anil, metasgd, protonet.
    config.method = "metadiff"

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "kanjivg_glyphs"
    config.dataset.config = "mini_28px"
    # Where built datasets live; empty means tfds' default (~/tensorflow_datasets, or $TFDS_DATA_DIR).
    config.dataset.data_dir = ""
    # Processes that render the dataset; 0 means one per core.
    config.dataset.workers = 0
    # Datasets built from user files (mini_imagenet, tiered_imagenet, cifar_fs, fc100, omniglot) read them
    # from here; empty means tfds' manual folder, <data_dir>/downloads/manual.
    config.dataset.manual_dir = ""
    # Accept only the official files (checksums, class and image counts); False builds from files with the
    # right format but other counts, and records that the dataset is unofficial.
    config.dataset.strict = True
    # False reads images from the built record files when an episode or batch needs them (tieredImageNet).
    config.dataset.in_memory = True

    config.episodes = ml_collections.ConfigDict()
    config.episodes.ways = 5
    config.episodes.queries = 15
    config.episodes.shots = (1, 5)  # one MetaDiff model is trained and evaluated per shot count
    config.episodes.test_episodes = 600
    config.episodes.test_seed = 2024

    config.backbone = ml_collections.ConfigDict()
    config.backbone.name = "conv4"
    # Channels of the first stage (0: the backbone's own; Conv-4 64, ResNet-12 64, later stages scale with it).
    config.backbone.width = 0
    # Compute dtype of the backbone's convolutions ("float32", "bfloat16"; parameters and optimizer state
    # stay float32), and how they run: "auto" (on a CPU patches + matmul in training and XLA's convolution to
    # encode, XLA's elsewhere), "xla", "patches", "patches_in_training" (metadiff_jax/backbones.py says why).
    config.backbone.dtype = "float32"
    config.backbone.convolution = "auto"

    # pretrain.PretrainConfig: the reference recipe, shortened to 3 epochs.
    config.pretrain = config_dict.section(pretrain.PretrainConfig(), exclude=("seed",))

    # train.TrainConfig's fields (steps, batch_size, learning_rate, weight_decay, ema_decay, ema_start,
    # check_every, objective, targets, finetune_*, query_loss.*), and the model and sampler beside them.
    config.metadiff = config_dict.section(train.TrainConfig(), exclude=("seed",))
    # A name in denoiser.DENOISERS; its fields are read from the section of the same name below.
    config.metadiff.denoiser = "tcunet"
    # TCUNet's fields (condition, anchor, prediction, width, depth, time_dim; denoiser.TCUNet says what each does).
    config.metadiff.tcunet = config_dict.section(denoiser.TCUNet(dim=0), exclude=MODULE_FIELDS)
    # The denoiser's view of the support set: W - p plus a learned projection of p itself. With the anchor
    # below, chosen on validation episodes over 3 seeds among the variants of docs/findings.md
    # (benchmarks/results/headline.json); the `published` ablation (configs/ablations.py) runs the
    # reference's form, "gradient" 2K (W - p) with anchor "zero".
    config.metadiff.tcunet.condition = "normalized_gradient_and_prototypes"
    # Where the diffusion is centred (denoiser.origin): "prototypes" diffuses W - p from N(p, I); "zero"
    # diffuses W itself from N(0, I), the reference, which collapses on this dataset (docs/findings.md).
    config.metadiff.tcunet.anchor = "prototypes"
    # EpisodeTransformer's fields (anchor, prediction, hidden, blocks, heads, time_dim), anchored like the TCUNet.
    config.metadiff.episode_transformer = config_dict.section(denoiser.EpisodeTransformer(dim=0), exclude=MODULE_FIELDS)
    config.metadiff.episode_transformer.anchor = "prototypes"
    # Scale features so that MetaDiff's targets have unit standard deviation (the scale of its noise).
    config.metadiff.unit_scale_targets = True
    config.metadiff.schedule = "linear"
    config.metadiff.timesteps = 1000
    # sampler.SamplerConfig: method (a name in sampler.SAMPLERS: ddpm_mean, ddpm, ddim, linear), steps (unset:
    # all T; fewer: evenly spaced timesteps, the DDPM rules over the respaced process), start (sampler.STARTS), draws.
    config.metadiff.sampler = config_dict.section(sampler_lib.SamplerConfig())
    # Sample with the EMA of the denoiser (the reference) or, False, with its last parameters.
    config.metadiff.evaluate_ema = True
    # Test the final parameters ("final", the reference) or the EMA parameters of the checkpoint with the best
    # validation accuracy ("best": training length chosen on validation; needs checkpoint.validation_episodes).
    config.metadiff.evaluate = "final"
    # The rule of every learned row (rivals.py): stop once 3 validations in a row (one per checkpoint) have not
    # beaten the best, and test the best. On the default dataset MetaDiff's validation accuracy peaks near
    # 1,000 of 20,000 steps at 5 shots and rises slowly to ~15,000 at 1 shot.
    config.metadiff.patience = 3

    # The non-diffusion rows beside MetaDiff, on the same features and test episodes (metadiff_jax/rivals.py,
    # the registry rivals.RIVALS): prototypes_power (prototypes of power-transformed features), logistic
    # (logistic regression on L2-normalised features), finetuned (cosine classifier fine-tuned on the
    # support), ridge (linear map from K-shot prototypes to class means, fit on base classes), anil (a
    # meta-learned head, ANIL's inner loop on the normalised features), regressor (MetaDiff's denoiser trained
    # as a one-step regressor). The prototype classifier is always there. Each rival's settings (its grid, searched on `validation_episodes`
    # validation episodes) are the section of its name, from its settings dataclass.
    config.rivals = ml_collections.ConfigDict()
    config.rivals.rows = tuple(rivals.RIVALS)
    config.rivals.validation_episodes = 600
    for name, rival in rivals.RIVALS.items():
        config.rivals[name] = config_dict.section(rival.settings())

    # checkpoints.CheckpointPolicy: MetaDiff's meta-training saves its whole state every `every` steps
    # (keeping the last `keep`) in workdir/checkpoints/metadiff_<K>shot_progress; a stopped run resumes there.
    # At each save the EMA model is scored on `validation_episodes` validation episodes (0: off) and the best
    # is kept in ..._progress_best; the test evaluation uses the final EMA model, as the reference does.
    config.checkpoint = config_dict.section(checkpoints.CheckpointPolicy(""), exclude=("directory", "metadata"))
    config.checkpoint.validation_episodes = 100

    config.parallel = ml_collections.ConfigDict()
    # Devices of the ('data',) mesh that MetaDiff's outer step and sampler are sharded over: 0 = every device
    # of every process (one CPU here, 8 GPUs on an 8-GPU host, a whole TPU pod); N = the first N (one host).
    config.parallel.devices = 0
    # How the outer step is spread over them (parallel.data_parallel_step): "jit" (one program, XLA inserts
    # the all-reduce) or "shard_map" (the per-device program with explicit lax.pmean).
    config.parallel.style = "jit"

    # Used when method is a baseline: meta-trained from scratch on image episodes, no pretraining.
    # gradient.GradientMetaConfig's fields (inner_steps, inner_lr, outer_lr, unroll) and the outer loop's.
    config.baseline = config_dict.section(gradient.GradientMetaConfig(), exclude=("method",))
    config.baseline.steps = 30_000  # a cap: training stops when validation accuracy stops rising
    config.baseline.meta_batch = 4
    # Every `validate_every` steps the state is saved and scored on `validation_episodes` validation
    # episodes; training stops after `patience` scores in a row without a new best, and the best is tested.
    config.baseline.validate_every = 250
    config.baseline.validation_episodes = 100
    config.baseline.patience = 4
    return config
