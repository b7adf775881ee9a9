"""preference: prepare data -> SFT -> DPO -> evaluate base vs SFT vs DPO -> register (gated).

`build(Platform(...))` makes the pipeline for given compile-time settings; `preference_pipeline` is the
one built from the environment (`from alignpipe.pipelines.preference import preference_pipeline`).
"""

from typing import NamedTuple, Optional

from kfp import dsl

from alignpipe import steps
from alignpipe.pipelines import common
from alignpipe.pipelines.common import Platform

NAME = "alignpipe-preference"
REQUIRED = ["sft_train", "preference_train", "eval_set"]


def build(p: Optional[Platform] = None):
    p = p or Platform()
    d = steps.defaults()
    sft_d, po_d, ev_d, reg_d = (d[s] for s in ("sft", "preference", "evaluate", "register"))
    Outputs = NamedTuple("Outputs", [("eval_results", dsl.Artifact), ("registry", dict)])

    @dsl.pipeline(name=NAME, description="SFT -> DPO on preference pairs -> held-out evaluation of base, SFT "
                  "and DPO -> gated registration in MLflow.")
    def preference_pipeline(
        base_model: str = sft_d["typed"]["model"],
        sft_data: str = "",
        preference_data: str = "",
        preference_eval_data: str = "",
        eval_data: str = "",
        seed: int = 0,
        sft_steps: int = sft_d["typed"]["max_steps"],
        sft_learning_rate: float = sft_d["typed"]["learning_rate"],
        dpo_steps: int = po_d["typed"]["max_steps"],
        dpo_learning_rate: float = po_d["typed"]["learning_rate"],
        dpo_beta: float = po_d["typed"]["beta"],
        eval_k: int = ev_d["typed"]["k"],
        registry_model_name: str = reg_d["typed"]["model_name"],
        gate_metric: str = reg_d["typed"]["gate_metric"],
        gate_threshold: float = reg_d["typed"]["gate_threshold"],
        sft_config: dict = sft_d["config"],
        dpo_config: dict = po_d["config"],
        evaluate_config: dict = ev_d["config"],
        register_config: dict = reg_d["config"],
        sft_accelerator_type: str = p.gpu_resource,
        sft_accelerator_count: int = p.gpu_count,
        dpo_accelerator_type: str = p.gpu_resource,
        dpo_accelerator_count: int = p.gpu_count,
        eval_accelerator_type: str = p.gpu_resource,
        eval_accelerator_count: int = p.gpu_count,
        gpu_tolerations: list = p.tolerations,
        gpu_node_selector: dict = p.node_selector,
        s3_secret: str = p.s3_secret,
        mlflow_secret: str = p.mlflow_secret,
    ) -> Outputs:
        from alignpipe.components import preference

        secrets = (s3_secret, mlflow_secret)
        data = common.prepare(p, secrets, REQUIRED, seed, sft_data=sft_data, preference_data=preference_data,
                              preference_eval_data=preference_eval_data, eval_data=eval_data)
        sft = common.train_sft(p, secrets, common.gpu_settings(sft_accelerator_type, sft_accelerator_count,
                                                               gpu_tolerations, gpu_node_selector),
                               data, sft_config, base_model, sft_steps, sft_learning_rate, seed)
        dpo = preference(config=dpo_config, max_steps=dpo_steps, learning_rate=dpo_learning_rate, beta=dpo_beta,
                         seed=seed, sft_model=sft.outputs["model"], train_data=data.outputs["preference_train"],
                         eval_data=data.outputs["preference_eval"])
        common.gpu_step(dpo, "preference", "DPO", p, *secrets, retry=True,
                        **common.gpu_settings(dpo_accelerator_type, dpo_accelerator_count, gpu_tolerations,
                                              gpu_node_selector))
        ev = common.evaluate_models(p, secrets, common.gpu_settings(eval_accelerator_type, eval_accelerator_count,
                                                                    gpu_tolerations, gpu_node_selector),
                                    data, evaluate_config, eval_k, seed, base_model, sft, "dpo", dpo)
        reg = common.register_model(p, secrets, register_config, dpo, ev, "dpo", registry_model_name,
                                    gate_metric, gate_threshold)
        return Outputs(eval_results=ev.outputs["results"], registry=reg.outputs["Output"])

    return preference_pipeline


preference_pipeline = build()

if __name__ == "__main__":  # pragma: no cover
    from kfp import compiler

    compiler.Compiler().compile(preference_pipeline, "preference.yaml")
