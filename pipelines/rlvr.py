"""rlvr: prepare data -> SFT -> RL with verifiable rewards (no reward model) -> evaluate base vs SFT vs RL
on the held-out set -> register (gated).

`build(Platform(...))` makes the pipeline for given compile-time settings; `rlvr_pipeline` is the one
built from the environment (`from alignpipe.pipelines.rlvr import rlvr_pipeline`). Parameters:
typed ones from `alignpipe.steps.STAGE_PARAMS` (defaults from the schema), cluster wiring from
`common.STEPS`; tests/pipelines/test_compile.py checks the signature against both tables.
"""

from typing import NamedTuple, Optional

from kfp import dsl

from alignpipe import steps
from alignpipe.pipelines import common
from alignpipe.pipelines.common import Platform

NAME = "alignpipe-rlvr"
REQUIRED = ["sft_train", "rl_train", "eval_set"]

DESCRIPTION = ("SFT -> RL with verifiable rewards (no reward model) -> held-out evaluation of base, SFT an"
               "d RL -> gated registration in MLflow.")


def build(p: Optional[Platform] = None):
    p = p or Platform()
    d = steps.defaults()
    verifiable = [r for r in d["rl"]["typed"]["rewards"] if r["name"] != "reward_model"] or [{"name": "exact_match"}]
    Outputs = NamedTuple("Outputs", [("eval_results", dsl.Artifact), ("registry", dict)])

    @dsl.pipeline(name=NAME, description=DESCRIPTION)
    def rlvr_pipeline(
        base_model: str = d["sft"]["typed"]["base_model"],
        sft_data: str = "",
        rl_data: str = "",
        eval_data: str = "",
        sft_data_format: str = steps.AUTO_FORMAT,
        rl_data_format: str = steps.AUTO_FORMAT,
        eval_data_format: str = steps.AUTO_FORMAT,
        seed: int = 0,
        sft_steps: int = d["sft"]["typed"]["max_steps"],
        sft_learning_rate: float = d["sft"]["typed"]["learning_rate"],
        rl_algorithm: str = d["rl"]["typed"]["algorithm"],
        rl_engine: str = d["rl"]["typed"]["engine"],
        rl_steps: int = d["rl"]["typed"]["max_steps"],
        rl_learning_rate: float = d["rl"]["typed"]["learning_rate"],
        rewards: list = verifiable,
        evaluate_k: int = d["evaluate"]["typed"]["k"],
        registry_model_name: str = d["register"]["typed"]["model_name"],
        gate_metric: str = d["register"]["typed"]["gate_metric"],
        gate_threshold: float = d["register"]["typed"]["gate_threshold"],
        sft_config: dict = d["sft"]["config"],
        rl_config: dict = d["rl"]["config"],
        evaluate_config: dict = d["evaluate"]["config"],
        register_config: dict = d["register"]["config"],
        sft_accelerator_type: str = p.gpu_resource,
        sft_accelerator_count: int = p.gpu_count,
        sft_nodes: int = 1,
        rl_accelerator_type: str = p.gpu_resource,
        rl_accelerator_count: int = p.gpu_count,
        rl_nodes: int = 1,
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
        policy = common.rl(w, data, sft, params)
        ev = common.evaluate(w, data, sft, params, "rl", policy)
        reg = common.register(w, policy, ev, "rl", params)
        return Outputs(eval_results=ev.outputs["results"], registry=reg.outputs["Output"])

    return rlvr_pipeline


rlvr_pipeline = build()

if __name__ == "__main__":  # pragma: no cover
    from kfp import compiler

    compiler.Compiler().compile(rlvr_pipeline, "rlvr.yaml")
