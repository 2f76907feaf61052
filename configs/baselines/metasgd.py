"""Meta-SGD (Li et al. 2017): MAML with meta-learned per-parameter inner learning rates.

    python -m launch.main --config configs/baselines/metasgd.py --workdir runs/metasgd

Trains on image episodes of the default dataset from scratch and evaluates on the same fixed test episodes
as configs/default.py (same test seed and count), so `python -m launch.compare runs/default runs/metasgd`
pairs the two per episode. On a 2-core CPU one MAML-family outer step takes seconds (BENCHMARKS.md,
memory section): the default step count is sized for a GPU; lower --config.baseline.steps on a laptop.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.method = "metasgd"
    return config
