"""Supervised fine-tuning. Semantics: alignpipe.stages.sft.run."""

from typing import Optional

from kfp import dsl

from alignpipe.platform import image


@dsl.component(base_image=image(), install_kfp_package=False)
def sft(config: dict, base_model: str, max_steps: int, learning_rate: float, seed: int, gpus: int, nodes: int, multinode_kind: str,
        train_data: dsl.Input[dsl.Dataset], model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics],
        report: dsl.Output[dsl.HTML], init_model: Optional[dsl.Input[dsl.Model]] = None):
    """Train `base_model` on `train_data` with `gpus` GPUs on each of `nodes` nodes; the model is published to
    `model` (MANIFEST.json last)."""
    from alignpipe import steps

    typed = steps.typed_args("sft", locals())
    if init_model is not None:  # start from an upstream model artifact (e.g. sft-rl-routed's warm-up) instead
        typed["base_model"] = init_model.path
    steps.run_component(
        "sft", config, typed,
        {"train_data": train_data.path, "output_dir": model.path}, metrics=metrics, report=report, output=model)
