"""Reward model training (Bradley-Terry). Semantics: alignpipe.stages.reward_model.run."""

from kfp import dsl

from alignpipe.platform import image


@dsl.component(base_image=image(), install_kfp_package=False)
def reward_model(config: dict, max_steps: int, learning_rate: float, seed: int, gpus: int, nodes: int, multinode_kind: str,
                 sft_model: dsl.Input[dsl.Model],
                 train_data: dsl.Input[dsl.Dataset], eval_data: dsl.Input[dsl.Dataset],
                 model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics], report: dsl.Output[dsl.HTML]):
    """Train a reward model from the SFT model on preference pairs; pairwise accuracy on `eval_data` if given."""
    from alignpipe import steps

    steps.run_component(
        "reward_model", config, steps.typed_args("reward_model", locals()),
        {"model": sft_model.path, "train_data": train_data.path, "eval_data": steps.dataset_path(eval_data),
         "output_dir": model.path}, metrics=metrics, report=report, output=model)
