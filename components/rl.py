"""RL fine-tuning (GRPO, RLOO, PPO, expert iteration). Semantics: alignpipe.stages.rl.run."""

from typing import Optional

from kfp import dsl

from alignpipe.platform import image


@dsl.component(base_image=image(), install_kfp_package=False)
def rl(config: dict, algorithm: str, engine: str, rewards: list, max_steps: int, learning_rate: float, seed: int,
       gpus: int, nodes: int, multinode_kind: str, sft_model: dsl.Input[dsl.Model], train_data: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model],
       metrics: dsl.Output[dsl.Metrics], report: dsl.Output[dsl.HTML],
       reward_model: Optional[dsl.Input[dsl.Model]] = None):
    """Optimise the SFT policy for the summed `rewards` (the `reward_model` reward uses `reward_model`)."""
    from alignpipe import steps

    steps.run_component(
        "rl", config, steps.typed_args("rl", locals()),
        {"model": sft_model.path, "train_data": train_data.path,
         "reward_model": reward_model.path if reward_model is not None else None, "output_dir": model.path},
        metrics=metrics, report=report, output=model)
