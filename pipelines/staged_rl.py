"""staged-rl (AceReason: math-only RL, then code-only RL): prepare data -> SFT -> RL stage 1 -> evaluate -> RL
stage 2 -> evaluate -> ... -> register the last stage's model (gated).

The stages are the run-time parameter `stages`, a JSON list with one mapping per stage: `name`, `rl_data`,
`rl_data_format`, `rewards`, `rl_config`, `rl_steps`, `rl_learning_rate`; a key an entry leaves out takes the
pipeline parameter of the same name (`alignpipe.rl_stages`). Stage i+1 starts from stage i's model. Each stage is
three steps: `rl-stage` (its entry resolved, its data validated like prepare-data does), `rl` (an ordinary RL
step: checkpoints and reuse make a retried or re-run stage resume or reuse) and `evaluate` (base, SFT and this
stage's model, named after the stage, on the held-out set) — so every stage has its own scores, and each
stage's evaluation shows what it kept or lost on the domains it did not train on.

KFP has no loop whose iterations run one after another and hand each other an artifact, so the NUMBER of
stages is fixed when the pipeline is compiled (`build(num_stages=N)`, default 2; the `stages` list must have N
entries, checked at compile, run and submit time), and what each stage trains on is chosen per run. Unrolling
at compile time keeps every stage a plain, visible task with its own logs, metrics, retries and cache entry in
the Kubeflow UI; a fixed maximum with skip conditions would need KFP's OneOf to pick the last model and leave
skipped steps in every graph.

`build(Platform(...), num_stages=N)` makes the pipeline; `staged_rl_pipeline` is the 2-stage one built from the
environment.
"""

from typing import NamedTuple, Optional

from kfp import dsl

from alignpipe import steps
from alignpipe.pipelines import common
from alignpipe.pipelines.common import Platform

NAME = "alignpipe-staged-rl"
REQUIRED = ["sft_train", "eval_set"]
NUM_STAGES = 2

DESCRIPTION = ("SFT -> RL stages in sequence (each with its own data, rewards and settings; each starts from the "
               "previous stage's model) -> held-out evaluation after each stage -> gated registration of the last.")


def build(p: Optional[Platform] = None, num_stages: int = NUM_STAGES):
    p = p or Platform()
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1 (got {num_stages})")
    d = steps.defaults()
    verifiable = [r for r in d["rl"]["typed"]["rewards"] if r["name"] != "reward_model"] or [{"name": "exact_match"}]
    default_stages = [{"name": f"stage{i + 1}"} for i in range(num_stages)]
    Outputs = NamedTuple("Outputs", [("eval_results", dsl.Artifact), ("registry", dict)])

    @dsl.pipeline(name=NAME, description=DESCRIPTION)
    def staged_rl_pipeline(
        base_model: str = d["sft"]["typed"]["base_model"],
        sft_data: str = "",
        rl_data: str = "",
        eval_data: str = "",
        sft_data_format: str = steps.AUTO_FORMAT,
        rl_data_format: str = steps.AUTO_FORMAT,
        eval_data_format: str = steps.AUTO_FORMAT,
        stages: list = default_stages,
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
        from alignpipe.components import rl_stage

        params = dict(locals())
        w = common.wiring(p, params)
        data = common.prepare(w, REQUIRED, {**params, "rl_data": ""})  # each stage prepares its own RL data
        policy = sft = common.sft(w, data, params)
        ev = None
        for i in range(num_stages):
            stage = rl_stage(stages=stages, index=i, count=num_stages, seed=seed, rl_data=rl_data,
                             rl_data_format=rl_data_format, rewards=rewards, rl_config=rl_config, rl_steps=rl_steps,
                             rl_learning_rate=rl_learning_rate)
            w.place(stage, "rl-stage").set_display_name(f"RL stage {i + 1}: data and settings")
            stage_params = {**params, "rewards": stage.outputs["rewards"], "rl_config": stage.outputs["rl_config"],
                            "rl_steps": stage.outputs["rl_steps"], "rl_learning_rate": stage.outputs["rl_learning_rate"]}
            policy = common.rl(w, data, policy, stage_params, train_data=stage.outputs["rl_train"])
            policy.set_display_name(f"RL stage {i + 1}")
            ev = common.evaluate(w, data, sft, params, stage.outputs["name"], policy)
            ev.set_display_name(f"Evaluate after RL stage {i + 1}")
        reg = common.register(w, policy, ev, stage.outputs["name"], params)
        return Outputs(eval_results=ev.outputs["results"], registry=reg.outputs["Output"])

    return staged_rl_pipeline


staged_rl_pipeline = build()

if __name__ == "__main__":  # pragma: no cover
    from kfp import compiler

    compiler.Compiler().compile(staged_rl_pipeline, "staged-rl.yaml")
