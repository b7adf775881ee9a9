"""sft: prepare data -> SFT -> evaluate base vs SFT -> register (gated).

`build(Platform(...))` makes the pipeline for given compile-time settings; `sft_pipeline` is the one
built from the environment (`from alignpipe.pipelines.sft import sft_pipeline`).
"""

from typing import NamedTuple, Optional

from kfp import dsl

from alignpipe import steps
from alignpipe.pipelines import common
from alignpipe.pipelines.common import Platform

NAME = "alignpipe-sft"
REQUIRED = ["sft_train", "eval_set"]


def build(p: Optional[Platform] = None):
    p = p or Platform()
    d = steps.defaults()
    sft_d, ev_d, reg_d = (d[s] for s in ("sft", "evaluate", "register"))
    Outputs = NamedTuple("Outputs", [("eval_results", dsl.Artifact), ("registry", dict)])

    @dsl.pipeline(name=NAME, description="SFT -> held-out evaluation of base and SFT -> gated registration in MLflow.")
    def sft_pipeline(
        base_model: str = sft_d["typed"]["model"],
        sft_data: str = "",
        eval_data: str = "",
        seed: int = 0,
        sft_steps: int = sft_d["typed"]["max_steps"],
        sft_learning_rate: float = sft_d["typed"]["learning_rate"],
        eval_k: int = ev_d["typed"]["k"],
        registry_model_name: str = reg_d["typed"]["model_name"],
        gate_metric: str = reg_d["typed"]["gate_metric"],
        gate_threshold: float = reg_d["typed"]["gate_threshold"],
        sft_config: dict = sft_d["config"],
        evaluate_config: dict = ev_d["config"],
        register_config: dict = reg_d["config"],
        sft_accelerator_type: str = p.gpu_resource,
        sft_accelerator_count: int = p.gpu_count,
        eval_accelerator_type: str = p.gpu_resource,
        eval_accelerator_count: int = p.gpu_count,
        gpu_tolerations: list = p.tolerations,
        gpu_node_selector: dict = p.node_selector,
        s3_secret: str = p.s3_secret,
        mlflow_secret: str = p.mlflow_secret,
    ) -> Outputs:
        secrets = (s3_secret, mlflow_secret)
        data = common.prepare(p, secrets, REQUIRED, seed, sft_data=sft_data, eval_data=eval_data)
        sft = common.train_sft(p, secrets, common.gpu_settings(sft_accelerator_type, sft_accelerator_count,
                                                               gpu_tolerations, gpu_node_selector),
                               data, sft_config, base_model, sft_steps, sft_learning_rate, seed)
        ev = common.evaluate_models(p, secrets, common.gpu_settings(eval_accelerator_type, eval_accelerator_count,
                                                                    gpu_tolerations, gpu_node_selector),
                                    data, evaluate_config, eval_k, seed, base_model, sft)
        reg = common.register_model(p, secrets, register_config, sft, ev, "sft", registry_model_name,
                                    gate_metric, gate_threshold)
        return Outputs(eval_results=ev.outputs["results"], registry=reg.outputs["Output"])

    return sft_pipeline


sft_pipeline = build()

if __name__ == "__main__":  # pragma: no cover
    from kfp import compiler

    compiler.Compiler().compile(sft_pipeline, "sft.yaml")
