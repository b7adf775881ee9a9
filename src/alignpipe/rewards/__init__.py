"""Reward functions for RL fine-tuning and evaluation, chosen by name in a stage config.

Every reward is a plain callable in TRL's signature::

    f(prompts, completions, **kwargs) -> list[float | None]

`completions[i]` is a string (plain prompts) or `[{"role": "assistant", "content": ...}]`
(conversational prompts) - `completion_text(c)` gives the text either way. The data set's extra
columns (`answer`, `label`, ...) arrive as keyword arguments, one value per completion; return None
for a completion the reward does not apply to.

Built in: `exact_match`, `math_verify`, `label`, `format` (see `alignpipe.rewards.verifiable`) and
`reward_model` (a trained reward model, `reward_model_reward(path)`). A config selects them with weights::

    rewards:
      - {name: math_verify, weight: 1.0}
      - {name: format, weight: 0.2, kwargs: {mode: search, pattern: "<answer>.*</answer>"}}
      - {name: my_pkg.rewards:brevity, weight: 0.1}     # your own function, by dotted path

`build(specs, reward_model_path=None)` turns the specs into `(funcs, weights)` for TRL; TRL logs
`rewards/<name>/mean` per function. `score(funcs, weights, prompts, completions, **columns)` gives each
reward's values and the weighted `total` (evaluation).

How to add a reward function
----------------------------
1. Write one small module, e.g. `src/alignpipe/rewards/length.py`::

       from typing import Any
       from .registry import register
       from .text import completion_text

       @register("length_penalty")
       def length_penalty_reward(prompts: list, completions: list, max_chars: int = 200,
                                 **kwargs: Any) -> list[float]:
           \"\"\"-1.0 per `max_chars` characters over the budget.\"\"\"
           return [-max(0, len(completion_text(c)) - max_chars) / max_chars for c in completions]

   Name it `<what>_reward`; take `prompts, completions`, the columns you need as keyword parameters
   (default None, raise a ValueError that names the missing column), options as keyword parameters with
   defaults (config `kwargs` are checked against them), and `**kwargs` for the rest (TRL also passes
   `trainer_state`, `completion_ids`, ...).
2. Import the module below so that `@register` runs.
3. Add a test under `tests/rewards/` on plain and conversational completions.

A function outside the package needs no registration: name it by dotted path (`my_pkg.mod:func`).
"""

from . import verifiable  # noqa: F401  (registers the built-in rewards)
from . import code  # noqa: F401  (registers code_tests: programs run in alignpipe.sandbox)
from .combine import build, score
from .registry import RewardFunc, get, names, register
from .reward_model import reward_model_reward
from .text import answers_match, completion_text, extract_answer
from .verifiable import THINK_ANSWER, exact_match_reward, format_reward, label_reward, math_verify_reward

__all__ = [
    "RewardFunc",
    "THINK_ANSWER",
    "answers_match",
    "build",
    "completion_text",
    "exact_match_reward",
    "extract_answer",
    "format_reward",
    "get",
    "label_reward",
    "math_verify_reward",
    "names",
    "register",
    "reward_model_reward",
    "score",
]
