"""Offline preference optimisation (DPO and variants). Semantics: alignpipe.stages.preference.run."""

from kfp import dsl

from alignpipe.platform import image


@dsl.component(base_image=image(), install_kfp_package=False)
def preference(config: dict, max_steps: int, learning_rate: float, beta: float, seed: int, gpus: int, nodes: int, multinode_kind: str,
               sft_model: dsl.Input[dsl.Model], train_data: dsl.Input[dsl.Dataset], eval_data: dsl.Input[dsl.Dataset],
               model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics], report: dsl.Output[dsl.HTML]):
    """DPO from the SFT model (reference: a frozen copy of it) on preference pairs."""
    from alignpipe import steps

    steps.run_component(
        "preference", config, steps.typed_args("preference", locals()),
        {"model": sft_model.path, "train_data": train_data.path, "eval_data": steps.dataset_path(eval_data),
         "output_dir": model.path}, metrics=metrics, report=report, output=model)
