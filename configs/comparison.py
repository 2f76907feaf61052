"""The comparison a reviewer asks for: the default run with every learned rival's learning rate searched too.

    python -m benchmarks.headline --config configs/comparison.py --seeds 0,1,2,3,4 --workdir runs/comparison \
        --variants published,learning_rate_1e5,learning_rate_3e5,learning_rate_3e4,learning_rate_1e3,learning_rate_3e3,learning_rate_1e2

One rule for every learned row (metadiff_jax/rivals.py): its training is checked on 100 validation episodes
at regular intervals, stops after 3 checks without a new best, and the best state is tested; its learning
rate is chosen on the 600 validation episodes from {1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2} (MetaDiff: the
main run and the learning_rate_* variants of configs/ablations.py; the regressor:
rivals.regressor.learning_rates) or, for ANIL's outer Adam, {3e-4, 1e-3, 3e-3, 1e-2} beside its inner rates.

Every grid reaches one step past the choices an interim run of this comparison landed on (seeds 0 and 1,
docs/findings.md): MetaDiff and the regressor chose the top rate, 3e-3, at 1 shot and the bottom, 3e-5 or
1e-4, at 5 shots; ANIL's outer Adam chose 1e-3, and logistic regression the smallest penalty, 1e-4, once.
The default run (configs/default.py) searches the cheap grids only, to stay within its time on a laptop.
"""

import ml_collections

from configs import default

LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.rivals.regressor.learning_rates = LEARNING_RATES
    config.rivals.anil.outer_lrs = (3e-4, 1e-3, 3e-3, 1e-2)
    config.rivals.logistic.strengths = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    return config
