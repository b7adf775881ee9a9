"""rlhf: prepare data -> SFT -> reward model -> RL (GRPO; reward = reward model + verifiable rewards) ->
evaluate base vs SFT vs RL on the held-out set -> register (gated).

`build(Platform(...))` makes the pipeline for given compile-time settings; `rlhf_pipeline` is the one
built from the environment (`from alignpipe.pipelines.rlhf import rlhf_pipeline`).
"""


from typing import NamedTuple, Optional

from kfp import dsl

from alignpipe import steps
from alignpipe.pipelines import common
from alignpipe.pipelines.common import Platform

NAME = "alignpipe-rlhf"
REQUIRED = ["sft_train", "preference_train", "rl_train", "eval_set"]


def build(p: Optional[Platform] = None):
    p = p or Platform()
    d = steps.defaults()
    sft_d, rm_d, rl_d, ev_d, reg_d = (d[s] for s in ("sft", "reward_model", "rl", "evaluate", "register"))
    Outputs = NamedTuple("Outputs", [("eval_results", dsl.Artifact), ("registry", dict)])

    @dsl.pipeline(name=NAME, description="SFT -> reward model -> RL with the reward model (+ verifiable rewards) "
                  "-> held-out evaluation of base, SFT and RL -> gated registration in MLflow.")
    def rlhf_pipeline(
        base_model: str = sft_d["typed"]["model"],
        sft_data: str = "",
        preference_data: str = "",
        preference_eval_data: str = "",
        rl_data: str = "",
        eval_data: str = "",
        seed: int = 0,
        sft_steps: int = sft_d["typed"]["max_steps"],
        sft_learning_rate: float = sft_d["typed"]["learning_rate"],
        reward_model_steps: int = rm_d["typed"]["max_steps"],
        reward_model_learning_rate: float = rm_d["typed"]["learning_rate"],
        rl_algorithm: str = rl_d["typed"]["algorithm"],
        rl_steps: int = rl_d["typed"]["max_steps"],
        rl_learning_rate: float = rl_d["typed"]["learning_rate"],
        rewards: list = rl_d["typed"]["rewards"],
        eval_k: int = ev_d["typed"]["k"],
        registry_model_name: str = reg_d["typed"]["model_name"],
        gate_metric: str = reg_d["typed"]["gate_metric"],
        gate_threshold: float = reg_d["typed"]["gate_threshold"],
        sft_config: dict = sft_d["config"],
        reward_model_config: dict = rm_d["config"],
        rl_config: dict = rl_d["config"],
        evaluate_config: dict = ev_d["config"],
        register_config: dict = reg_d["config"],
        sft_accelerator_type: str = p.gpu_resource,
        sft_accelerator_count: int = p.gpu_count,
        reward_model_accelerator_type: str = p.gpu_resource,
        reward_model_accelerator_count: int = p.gpu_count,
        rl_accelerator_type: str = p.gpu_resource,
        rl_accelerator_count: int = p.gpu_count,
        eval_accelerator_type: str = p.gpu_resource,
        eval_accelerator_count: int = p.gpu_count,
        gpu_tolerations: list = p.tolerations,
        gpu_node_selector: dict = p.node_selector,
        s3_secret: str = p.s3_secret,
        mlflow_secret: str = p.mlflow_secret,
    ) -> Outputs:
        from alignpipe.components import reward_model, rl

        secrets = (s3_secret, mlflow_secret)
        data = common.prepare(p, secrets, REQUIRED, seed, sft_data=sft_data, preference_data=preference_data,
                              preference_eval_data=preference_eval_data, rl_data=rl_data, eval_data=eval_data)
        sft = common.train_sft(p, secrets, common.gpu_settings(sft_accelerator_type, sft_accelerator_count,
                                                               gpu_tolerations, gpu_node_selector),
                               data, sft_config, base_model, sft_steps, sft_learning_rate, seed)
        rm = reward_model(config=reward_model_config, max_steps=reward_model_steps,
                          learning_rate=reward_model_learning_rate, seed=seed, sft_model=sft.outputs["model"],
                          train_data=data.outputs["preference_train"], eval_data=data.outputs["preference_eval"])
        common.gpu_step(rm, "reward-model", "Train reward model", p, *secrets, retry=True,
                        **common.gpu_settings(reward_model_accelerator_type, reward_model_accelerator_count,
                                              gpu_tolerations, gpu_node_selector))
        policy = rl(config=rl_config, algorithm=rl_algorithm, rewards=rewards, max_steps=rl_steps,
                    learning_rate=rl_learning_rate, seed=seed, sft_model=sft.outputs["model"],
                    train_data=data.outputs["rl_train"], reward_model=rm.outputs["model"])
        common.gpu_step(policy, "rl", "RL fine-tuning", p, *secrets, retry=True,
                        **common.gpu_settings(rl_accelerator_type, rl_accelerator_count, gpu_tolerations,
                                              gpu_node_selector))
        ev = common.evaluate_models(p, secrets, common.gpu_settings(eval_accelerator_type, eval_accelerator_count,
                                                                    gpu_tolerations, gpu_node_selector),
                                    data, evaluate_config, eval_k, seed, base_model, sft, "rl", policy, rm)
        reg = common.register_model(p, secrets, register_config, policy, ev, "rl", registry_model_name,
                                    gate_metric, gate_threshold)
        return Outputs(eval_results=ev.outputs["results"], registry=reg.outputs["Output"])

    return rlhf_pipeline


rlhf_pipeline = build()

if __name__ == "__main__":  # pragma: no cover
    from kfp import compiler

    compiler.Compiler().compile(rlhf_pipeline, "rlhf.yaml")
