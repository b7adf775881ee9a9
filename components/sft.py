"""Supervised fine-tuning. Semantics: alignpipe.stages.sft.run."""

from kfp import dsl

from alignpipe.platform import image


@dsl.component(base_image=image(), install_kfp_package=False)
def sft(config: dict, base_model: str, max_steps: int, learning_rate: float, seed: int,
        train_data: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics],
        report: dsl.Output[dsl.HTML]):
    """Train `base_model` on `train_data`; the model is published to `model` (MANIFEST.json last)."""
    from alignpipe import steps

    steps.run_component(
        "sft", config, {"base_model": base_model, "max_steps": max_steps, "learning_rate": learning_rate, "seed": seed},
        {"train_data": train_data.path, "output_dir": model.path}, metrics=metrics, report=report, output=model)
