"""ptm_func: the chapter-8 CNNs of "Deep Learning with PyTorch" as pure functions.

from ptm_func import get_model
model = get_model("res")
params, state = model.init(seed=123)
logits, state = model.apply(params, state, x, train=False)
"""

from . import rng
from .adapter import FunctionalModule, functionalize
from .models import retie
from .modules import Net, NetBatchNorm, NetDepth, NetDropout, NetRes, NetResDeep, NetWidth, ResBlock
from .registry import MODEL_NAMES, Model, ModelConfigError, UnknownModelError, get_model

__all__ = [
    "MODEL_NAMES",
    "FunctionalModule",
    "Model",
    "ModelConfigError",
    "Net",
    "NetBatchNorm",
    "NetDepth",
    "NetDropout",
    "NetRes",
    "NetResDeep",
    "NetWidth",
    "ResBlock",
    "UnknownModelError",
    "functionalize",
    "get_model",
    "retie",
    "rng",
]
