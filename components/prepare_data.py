"""Validate and digest every data set a pipeline needs (or write the demo data). Semantics: alignpipe.steps.prepare_data."""

from kfp import dsl

from alignpipe.platform import image


@dsl.component(base_image=image(), install_kfp_package=False)
def prepare_data(required: list, seed: int, base_model: str, sft_data: str, preference_data: str, preference_eval_data: str,
                 rl_data: str, eval_data: str, sft_train: dsl.Output[dsl.Dataset],
                 preference_train: dsl.Output[dsl.Dataset], preference_eval: dsl.Output[dsl.Dataset],
                 rl_train: dsl.Output[dsl.Dataset], eval_set: dsl.Output[dsl.Dataset], metrics: dsl.Output[dsl.Metrics]):
    """Fails the run on bad data or no base model, before any training; with no data set URI at all it writes
    the demo data."""
    from alignpipe import steps

    uris = {"sft_train": sft_data, "preference_train": preference_data, "preference_eval": preference_eval_data,
            "rl_train": rl_data, "eval_set": eval_data}
    outputs = {"sft_train": sft_train, "preference_train": preference_train, "preference_eval": preference_eval,
               "rl_train": rl_train, "eval_set": eval_set}
    with steps.user_errors_exit():
        summary = steps.prepare_data(uris, required, outputs, seed, base_model=base_model)
    for split, info in summary.items():
        metrics.log_metric(f"data/{split}/rows", info["rows"])
