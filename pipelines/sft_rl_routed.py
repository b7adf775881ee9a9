"""sft-rl-routed (DeReason-style): prepare data -> SFT warm-up -> route the RL prompts by the warm-up model's pass
rate -> SFT on the easy ones (from the warm-up model) -> RL on the hard ones -> evaluate base vs SFT vs RL ->
register (gated).

- The warm-up SFT (on `sft_data`) gives the router a model whose pass rate means something; the route step
  samples `route_k` answers per `rl_data` prompt, scores them with the verifiable `rewards` (the RL rewards) and
  sends prompts solved at least `route_threshold` of the time to SFT, with their reference solution
  (`completion`, else `solution`, else `answer`: `route_config.reference`), and the others to RL
  (`alignpipe.stages.route`). Its `pass_rates` artifact holds pass_rates.json; the counts are its metrics.
- The easy-split SFT continues from the warm-up model with the same SFT settings (`sft_steps`, `sft_config`);
  RL starts from it and trains on the hard split only.
- Evaluate compares `base`, `sft` (the easy-split SFT model, where RL starts) and `rl`; register gates the RL model.

`build(Platform(...))` makes the pipeline for given compile-time settings; `sft_rl_routed_pipeline` is the one
built from the environment.
"""

from typing import NamedTuple, Optional

from kfp import dsl

from alignpipe import steps
from alignpipe.pipelines import common
from alignpipe.pipelines.common import Platform

NAME = "alignpipe-sft-rl-routed"
REQUIRED = ["sft_train", "rl_train", "eval_set"]

DESCRIPTION = ("SFT warm-up -> route RL prompts by the model's pass rate (k samples, verifiable rewards) -> SFT on "
               "the easy ones -> RL on the hard ones -> held-out evaluation -> gated registration in MLflow.")


def build(p: Optional[Platform] = None):
    p = p or Platform()
    d = steps.defaults()
    verifiable = [r for r in d["rl"]["typed"]["rewards"] if r["name"] != "reward_model"] or [{"name": "exact_match"}]
    Outputs = NamedTuple("Outputs", [("eval_results", dsl.Artifact), ("registry", dict)])

    @dsl.pipeline(name=NAME, description=DESCRIPTION)
    def sft_rl_routed_pipeline(
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
        route_k: int = d["route"]["typed"]["k"],
        route_threshold: float = d["route"]["typed"]["threshold"],
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
        route_config: dict = d["route"]["config"],
        rl_config: dict = d["rl"]["config"],
        evaluate_config: dict = d["evaluate"]["config"],
        register_config: dict = d["register"]["config"],
        sft_accelerator_type: str = p.gpu_resource,
        sft_accelerator_count: int = p.gpu_count,
        sft_nodes: int = 1,
        route_accelerator_type: str = p.gpu_resource,
        route_accelerator_count: int = p.gpu_count,
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
        warmup = common.sft(w, data, params).set_display_name("SFT warm-up (the router's model)")
        routed = common.route(w, data, warmup, params)
        sft = common.sft(w, data, params, train_data=routed.outputs["easy"], init_task=warmup)
        sft.set_display_name("SFT on the easy prompts")
        policy = common.rl(w, data, sft, params, train_data=routed.outputs["hard"])
        policy.set_display_name("RL on the hard prompts")
        ev = common.evaluate(w, data, sft, params, "rl", policy)
        reg = common.register(w, policy, ev, "rl", params)
        return Outputs(eval_results=ev.outputs["results"], registry=reg.outputs["Output"])

    return sft_rl_routed_pipeline


sft_rl_routed_pipeline = build()

if __name__ == "__main__":  # pragma: no cover
    from kfp import compiler

    compiler.Compiler().compile(sft_rl_routed_pipeline, "sft-rl-routed.yaml")
