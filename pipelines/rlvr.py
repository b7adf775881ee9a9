"""rlvr: prepare data -> SFT -> RL with verifiable rewards only (GRPO default) -> evaluate base vs SFT vs RL
-> register (gated). No reward model.

`build(Platform(...))` makes the pipeline for given compile-time settings; `rlvr_pipeline` is the one
built from the environment (`from alignpipe.pipelines.rlvr import rlvr_pipeline`).
"""

from typing import NamedTuple, Optional

from kfp import dsl

from alignpipe import steps
from alignpipe.pipelines import common
from alignpipe.pipelines.common import Platform

NAME = "alignpipe-rlvr"
REQUIRED = ["sft_train", "rl_train", "eval_set"]


def build(p: Optional[Platform] = None):
    p = p or Platform()
    d = steps.defaults()
    sft_d, rl_d, ev_d, reg_d = (d[s] for s in ("sft", "rl", "evaluate", "register"))
    verifiable = [r for r in rl_d["typed"]["rewards"] if r["name"] != "reward_model"] or [{"name": "exact_match"}]
    Outputs = NamedTuple("Outputs", [("eval_results", dsl.Artifact), ("registry", dict)])

    @dsl.pipeline(name=NAME, description="SFT -> RL with verifiable rewards (no reward model) -> held-out "
                  "evaluation of base, SFT and RL -> gated registration in MLflow.")
    def rlvr_pipeline(
        base_model: str = sft_d["typed"]["model"],
        sft_data: str = "",
        rl_data: str = "",
        eval_data: str = "",
        seed: int = 0,
        sft_steps: int = sft_d["typed"]["max_steps"],
        sft_learning_rate: float = sft_d["typed"]["learning_rate"],
        rl_algorithm: str = rl_d["typed"]["algorithm"],
        rl_steps: int = rl_d["typed"]["max_steps"],
        rl_learning_rate: float = rl_d["typed"]["learning_rate"],
        rewards: list = verifiable,
        eval_k: int = ev_d["typed"]["k"],
        registry_model_name: str = reg_d["typed"]["model_name"],
        gate_metric: str = reg_d["typed"]["gate_metric"],
        gate_threshold: float = reg_d["typed"]["gate_threshold"],
        sft_config: dict = sft_d["config"],
        rl_config: dict = rl_d["config"],
        evaluate_config: dict = ev_d["config"],
        register_config: dict = reg_d["config"],
        sft_accelerator_type: str = p.gpu_resource,
        sft_accelerator_count: int = p.gpu_count,
        rl_accelerator_type: str = p.gpu_resource,
        rl_accelerator_count: int = p.gpu_count,
        eval_accelerator_type: str = p.gpu_resource,
        eval_accelerator_count: int = p.gpu_count,
        gpu_tolerations: list = p.tolerations,
        gpu_node_selector: dict = p.node_selector,
        s3_secret: str = p.s3_secret,
        mlflow_secret: str = p.mlflow_secret,
    ) -> Outputs:
        from alignpipe.components import rl

        secrets = (s3_secret, mlflow_secret)
        data = common.prepare(p, secrets, REQUIRED, seed, sft_data=sft_data, rl_data=rl_data, eval_data=eval_data)
        sft = common.train_sft(p, secrets, common.gpu_settings(sft_accelerator_type, sft_accelerator_count,
                                                               gpu_tolerations, gpu_node_selector),
                               data, sft_config, base_model, sft_steps, sft_learning_rate, seed)
        policy = rl(config=rl_config, algorithm=rl_algorithm, rewards=rewards, max_steps=rl_steps,
                    learning_rate=rl_learning_rate, seed=seed, sft_model=sft.outputs["model"],
                    train_data=data.outputs["rl_train"])
        common.gpu_step(policy, "rl", "RL fine-tuning (verifiable rewards)", p, *secrets, retry=True,
                        **common.gpu_settings(rl_accelerator_type, rl_accelerator_count, gpu_tolerations,
                                              gpu_node_selector))
        ev = common.evaluate_models(p, secrets, common.gpu_settings(eval_accelerator_type, eval_accelerator_count,
                                                                    gpu_tolerations, gpu_node_selector),
                                    data, evaluate_config, eval_k, seed, base_model, sft, "rl", policy)
        reg = common.register_model(p, secrets, register_config, policy, ev, "rl", registry_model_name,
                                    gate_metric, gate_threshold)
        return Outputs(eval_results=ev.outputs["results"], registry=reg.outputs["Output"])

    return rlvr_pipeline


rlvr_pipeline = build()

if __name__ == "__main__":  # pragma: no cover
    from kfp import compiler

    compiler.Compiler().compile(rlvr_pipeline, "rlvr.yaml")
