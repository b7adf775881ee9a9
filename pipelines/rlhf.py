"""rlhf: prepare data -> SFT -> reward model -> RL (GRPO by default; reward = reward model + verifiable rewards) ->
evaluate base vs SFT vs RL on the held-out set -> register (gated). With `rl_algorithm=ppo` the RL step runs PPO
on alignpipe's engine with the critic initialised from the reward model (`alignpipe.steps.pipeline_choices`).

`build(Platform(...))` makes the pipeline for given compile-time settings; `rlhf_pipeline` is the one
built from the environment (`from alignpipe.pipelines.rlhf import rlhf_pipeline`). Parameters:
typed ones from `alignpipe.steps.STAGE_PARAMS` (defaults from the schema), cluster wiring from
`common.STEPS`; tests/pipelines/test_compile.py checks the signature against both tables.
"""

from typing import NamedTuple, Optional

from kfp import dsl

from alignpipe import steps
from alignpipe.pipelines import common
from alignpipe.pipelines.common import Platform

NAME = "alignpipe-rlhf"
REQUIRED = ["sft_train", "preference_train", "rl_train", "eval_set"]

DESCRIPTION = ("SFT -> reward model -> RL with the reward model (+ verifiable rewards) -> held-out evaluat"
               "ion of base, SFT and RL -> gated registration in MLflow.")


def build(p: Optional[Platform] = None):
    p = p or Platform()
    d = steps.defaults()
    Outputs = NamedTuple("Outputs", [("eval_results", dsl.Artifact), ("registry", dict)])

    @dsl.pipeline(name=NAME, description=DESCRIPTION)
    def rlhf_pipeline(
        base_model: str = d["sft"]["typed"]["base_model"],
        sft_data: str = "",
        preference_data: str = "",
        preference_eval_data: str = "",
        rl_data: str = "",
        eval_data: str = "",
        sft_data_format: str = steps.AUTO_FORMAT,
        preference_data_format: str = steps.AUTO_FORMAT,
        preference_eval_data_format: str = steps.AUTO_FORMAT,
        rl_data_format: str = steps.AUTO_FORMAT,
        eval_data_format: str = steps.AUTO_FORMAT,
        seed: int = 0,
        sft_steps: int = d["sft"]["typed"]["max_steps"],
        sft_learning_rate: float = d["sft"]["typed"]["learning_rate"],
        reward_model_steps: int = d["reward_model"]["typed"]["max_steps"],
        reward_model_learning_rate: float = d["reward_model"]["typed"]["learning_rate"],
        rl_algorithm: str = d["rl"]["typed"]["algorithm"],
        rl_engine: str = d["rl"]["typed"]["engine"],
        rl_steps: int = d["rl"]["typed"]["max_steps"],
        rl_learning_rate: float = d["rl"]["typed"]["learning_rate"],
        rewards: list = d["rl"]["typed"]["rewards"],
        evaluate_k: int = d["evaluate"]["typed"]["k"],
        registry_model_name: str = d["register"]["typed"]["model_name"],
        gate_metric: str = d["register"]["typed"]["gate_metric"],
        gate_threshold: float = d["register"]["typed"]["gate_threshold"],
        sft_config: dict = d["sft"]["config"],
        reward_model_config: dict = d["reward_model"]["config"],
        rl_config: dict = d["rl"]["config"],
        evaluate_config: dict = d["evaluate"]["config"],
        register_config: dict = d["register"]["config"],
        sft_accelerator_type: str = p.gpu_resource,
        sft_accelerator_count: int = p.gpu_count,
        sft_nodes: int = 1,
        reward_model_accelerator_type: str = p.gpu_resource,
        reward_model_accelerator_count: int = p.gpu_count,
        reward_model_nodes: int = 1,
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
        rm = common.reward_model(w, data, sft, params)
        policy = common.rl(w, data, sft, params, rm_task=rm)
        ev = common.evaluate(w, data, sft, params, "rl", policy, rm)
        reg = common.register(w, policy, ev, "rl", params)
        return Outputs(eval_results=ev.outputs["results"], registry=reg.outputs["Output"])

    return rlhf_pipeline


rlhf_pipeline = build()

if __name__ == "__main__":  # pragma: no cover
    from kfp import compiler

    compiler.Compiler().compile(rlhf_pipeline, "rlhf.yaml")
