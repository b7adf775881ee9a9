"""Validate and digest every data set a pipeline needs (or write the demo data); data sets in another tool's format
are detected and converted (`<dataset>_format`). Semantics: alignpipe.steps.prepare_data."""

from kfp import dsl

from alignpipe.platform import image


@dsl.component(base_image=image(), install_kfp_package=False)
def prepare_data(required: list, seed: int, base_model: str, sft_data: str, preference_data: str, preference_eval_data: str,
                 rl_data: str, eval_data: str, sft_train: dsl.Output[dsl.Dataset],
                 preference_train: dsl.Output[dsl.Dataset], preference_eval: dsl.Output[dsl.Dataset],
                 rl_train: dsl.Output[dsl.Dataset], eval_set: dsl.Output[dsl.Dataset], metrics: dsl.Output[dsl.Metrics],
                 sft_data_format: str = "auto", preference_data_format: str = "auto",
                 preference_eval_data_format: str = "auto", rl_data_format: str = "auto", eval_data_format: str = "auto"):
    """Fails the run on bad data or no base model, before any training; with no data set URI at all it writes
    the demo data."""
    from alignpipe import steps

    args = locals()
    uris = {split: args[param] for param, split in steps.DATA_PARAMS.items()}
    formats = {split: args[steps.format_param(param)] for param, split in steps.DATA_PARAMS.items()}
    outputs = {"sft_train": sft_train, "preference_train": preference_train, "preference_eval": preference_eval,
               "rl_train": rl_train, "eval_set": eval_set}
    with steps.user_errors_exit():
        summary = steps.prepare_data(uris, required, outputs, seed, base_model=base_model, formats=formats)
    for split, info in summary.items():
        metrics.log_metric(f"data/{split}/rows", info["rows"])
