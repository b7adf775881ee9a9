"""One stage of the staged-rl pipeline: its entry of `stages` resolved against the pipeline's RL parameters, and its
RL data validated (or converted) like prepare-data does. Semantics: alignpipe.rl_stages.resolve,
alignpipe.steps.prepare_data."""

from typing import NamedTuple

from kfp import dsl

from alignpipe.platform import image


@dsl.component(base_image=image(), install_kfp_package=False)
def rl_stage(stages: list, index: int, count: int, seed: int, rl_data: str, rl_data_format: str, rewards: list,
             rl_config: dict, rl_steps: int, rl_learning_rate: float, rl_train: dsl.Output[dsl.Dataset],
             metrics: dsl.Output[dsl.Metrics]) -> NamedTuple("Stage", [("name", str), ("rewards", list),
                                                                      ("rl_config", dict), ("rl_steps", int),
                                                                      ("rl_learning_rate", float)]):
    """Stage `index` (0-based) of `stages`: its name, rewards, RL config, steps and learning rate, and its data."""
    from collections import namedtuple

    from alignpipe import rl_stages, steps

    with steps.user_errors_exit():
        stage = rl_stages.check({**locals()}, count)[index]
        print(f"stage {index + 1}/{count}: {stage['name']}: rl_data={stage['rl_data'] or '(demo)'}", flush=True)
        summary = steps.prepare_data({"rl_train": stage["rl_data"] or ""}, ["rl_train"], {"rl_train": rl_train}, seed,
                                     formats={"rl_train": stage["rl_data_format"] or "auto"})
    rl_train.metadata["stage"] = stage["name"]
    metrics.log_metric("data/rl_train/rows", summary["rl_train"]["rows"])
    Stage = namedtuple("Stage", ["name", "rewards", "rl_config", "rl_steps", "rl_learning_rate"])
    return Stage(stage["name"], stage["rewards"], stage["rl_config"] or {}, int(stage["rl_steps"]),
                 float(stage["rl_learning_rate"]))
