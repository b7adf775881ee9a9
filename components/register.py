"""Register the model in the MLflow Model Registry behind a gate. Semantics: alignpipe.stages.register.run."""

from kfp import dsl

from alignpipe.platform import image


@dsl.component(base_image=image(), install_kfp_package=False)
def register(config: dict, model_name: str, gate_metric: str, gate_threshold: float, metrics_key: str,
             model: dsl.Input[dsl.Model], eval_results: dsl.Input[dsl.Artifact],
             metrics: dsl.Output[dsl.Metrics]) -> dict:
    """Returns {model_name, version, alias, promoted, reason}; alias `champion` only if the gate passes."""
    from alignpipe import steps

    result = steps.run_component(
        "register", config, steps.typed_args("register", locals()),
        {"model": model.path, "metrics": eval_results.path, "metrics_key": metrics_key}, metrics=metrics)
    return steps.registry_outputs(result)
