"""The names of the networks and training variants, without importing torch.

`ptm --help` reads these; `nets.registry` holds the networks themselves and checks that it
defines exactly MODEL_NAMES.
"""

from __future__ import annotations

from typing import Any

# The registry's networks, in the book's order.
MODEL_NAMES: tuple[str, ...] = ("net", "width", "dropout", "batchnorm", "depth", "res", "resdeep")
# Training variants that are not separate networks: name -> (model name, TrainConfig overrides).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"l2": ("net", {"l2_lambda": 1e-3})}
# Training-time augmentations (training/augment.py), in the order they apply; off by default.
AUGMENTATIONS = ("flip", "crop")
# The book's per-model learning rates (everything else trains at 1e-2).
BOOK_LR = {"resdeep": 3e-3}
# What `ptm train` and `ptm sweep` take: the networks and the variants, in the book's order.
TRAINABLE_NAMES = ("net", "width", "l2", "dropout", "batchnorm", "depth", "res", "resdeep")
# What --track mirrors the run's record into (files/tracking.py): each an optional extra of ptm_func.
TRACKERS = ("tensorboard", "mlflow")

# ptm check (reports/selfcheck.py): compiled vs eager after 3 steps differ by 1e-5 to 2e-4 on
# CPU (rounding)...
DEFAULT_TOLERANCE = 1e-3
# ...but deep nets amplify rounding: resdeep's 100 blocks differ by 3e-4 between two correct
# eager runs (NCHW vs channels-last images) and 2e-3 between 1 and 2 threads. The tolerance is
# at least this many times the difference of two such eager runs, measured in each check.
NOISE_FACTOR = 20
