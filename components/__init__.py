"""Kubeflow components: one thin file per stage; the body validates its config and calls alignpipe.stages.X.run.

The image is `alignpipe.platform.image()` at import time; pipelines set each task's image at build time
(`alignpipe.pipelines.common.Platform`), which is how `alignpipe compile --image` overrides it.
"""

from .evaluate import evaluate
from .preference import preference
from .prepare_data import prepare_data
from .register import register
from .reward_model import reward_model
from .rl import rl
from .rl_stage import rl_stage
from .route import route
from .sft import sft

__all__ = ["evaluate", "preference", "prepare_data", "register", "reward_model", "rl", "rl_stage", "route", "sft"]
