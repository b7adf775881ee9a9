"""preference: prepare data -> SFT -> DPO on preference pairs -> evaluate base vs SFT vs DPO on the held-out
set -> register (gated).

`build(Platform(...))` makes the pipeline for given compile-time settings; `preference_pipeline` is the one
built from the environment (`from alignpipe.pipelines.preference import preference_pipeline`). Parameters:
typed ones from `alignpipe.steps.STAGE_PARAMS` (defaults from the schema), cluster wiring from
`common.STEPS`; tests/pipelines/test_compile.py checks the signature against both tables.
"""

from typing import NamedTuple, Optional

from kfp import dsl

from alignpipe import steps
from alignpipe.pipelines import common
from alignpipe.pipelines.common import Platform

NAME = "alignpipe-preference"
REQUIRED = ["sft_train", "preference_train", "eval_set"]

DESCRIPTION = ("SFT -> DPO on preference pairs -> held-out evaluation of base, SFT and DPO -> gated regist"
               "ration in MLflow.")


def build(p: Optional[Platform] = None):
    p = p or Platform()
    d = steps.defaults()
    Outputs = NamedTuple("Outputs", [("eval_results", dsl.Artifact), ("registry", dict)])

    @dsl.pipeline(name=NAME, description=DESCRIPTION)
    def preference_pipeline(
        base_model: str = d["sft"]["typed"]["base_model"],
        sft_data: str = "",
        preference_data: str = "",
        preference_eval_data: str = "",
        eval_data: str = "",
        sft_data_format: str = steps.AUTO_FORMAT,
        preference_data_format: str = steps.AUTO_FORMAT,
        preference_eval_data_format: str = steps.AUTO_FORMAT,
        eval_data_format: str = steps.AUTO_FORMAT,
        seed: int = 0,
        sft_steps: int = d["sft"]["typed"]["max_steps"],
        sft_learning_rate: float = d["sft"]["typed"]["learning_rate"],
        preference_steps: int = d["preference"]["typed"]["max_steps"],
        preference_learning_rate: float = d["preference"]["typed"]["learning_rate"],
        preference_beta: float = d["preference"]["typed"]["beta"],
        evaluate_k: int = d["evaluate"]["typed"]["k"],
        registry_model_name: str = d["register"]["typed"]["model_name"],
        gate_metric: str = d["register"]["typed"]["gate_metric"],
        gate_threshold: float = d["register"]["typed"]["gate_threshold"],
        sft_config: dict = d["sft"]["config"],
        preference_config: dict = d["preference"]["config"],
        evaluate_config: dict = d["evaluate"]["config"],
        register_config: dict = d["register"]["config"],
        sft_accelerator_type: str = p.gpu_resource,
        sft_accelerator_count: int = p.gpu_count,
        sft_nodes: int = 1,
        preference_accelerator_type: str = p.gpu_resource,
        preference_accelerator_count: int = p.gpu_count,
        preference_nodes: int = 1,
        evaluate_accelerator_type: str = p.gpu_resource,
        evaluate_accelerator_count: int = p.gpu_count,
        multinode_kind: str = "trainjob",
        gpu_tolerations: list = p.tolerations,
        gpu_node_selector: dict = p.node_selector,
        s3_secret: str = p.s3_secret,
        mlflow_secret: str = p.mlflow_secret,
        reward_secret: str = p.reward_secret,
    ) -> Outputs:
        params = dict(locals())
        w = common.wiring(p, params)
        data = common.prepare(w, REQUIRED, params)
        sft = common.sft(w, data, params)
        dpo = common.preference(w, data, sft, params)
        ev = common.evaluate(w, data, sft, params, "dpo", dpo)
        reg = common.register(w, dpo, ev, "dpo", params)
        return Outputs(eval_results=ev.outputs["results"], registry=reg.outputs["Output"])

    return preference_pipeline


preference_pipeline = build()

if __name__ == "__main__":  # pragma: no cover
    from kfp import compiler

    compiler.Compiler().compile(preference_pipeline, "preference.yaml")
