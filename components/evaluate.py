"""Held-out evaluation of base, SFT and tuned models. Semantics: alignpipe.stages.evaluate.run."""

from typing import Optional

from kfp import dsl

from alignpipe.platform import image


@dsl.component(base_image=image(), install_kfp_package=False)
def evaluate(config: dict, k: int, seed: int, base_model: str, tuned_name: str, eval_data: dsl.Input[dsl.Dataset],
             sft_model: dsl.Input[dsl.Model], results: dsl.Output[dsl.Artifact], metrics: dsl.Output[dsl.Metrics],
             report: dsl.Output[dsl.HTML], tuned_model: Optional[dsl.Input[dsl.Model]] = None,
             reward_model: Optional[dsl.Input[dsl.Model]] = None):
    """Compare base, sft and (if given) `tuned_name` on `eval_data`; `results` is the metrics JSON."""
    from alignpipe import steps

    models = {"base": base_model, "sft": sft_model.path}
    if tuned_model is not None:
        models[tuned_name] = tuned_model.path
    steps.run_component(
        "evaluate", config, steps.typed_args("evaluate", locals()),
        {"models": models, "data": eval_data.path, "output": results.path,
         "reward_model": reward_model.path if reward_model is not None else None},
        metrics=metrics, report=report)
