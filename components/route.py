"""Route training prompts by the model's pass rate: easy ones to SFT, hard ones to RL. Semantics: alignpipe.stages.route.run."""

from kfp import dsl

from alignpipe.platform import image


@dsl.component(base_image=image(), install_kfp_package=False)
def route(config: dict, k: int, threshold: float, rewards: list, seed: int, model: dsl.Input[dsl.Model],
          prompts: dsl.Input[dsl.Dataset], easy: dsl.Output[dsl.Dataset], hard: dsl.Output[dsl.Dataset],
          pass_rates: dsl.Output[dsl.Artifact], metrics: dsl.Output[dsl.Metrics]):
    """`k` samples per prompt of `model`; pass rate >= `threshold` -> `easy` (SFT rows), else `hard` (RL prompts);
    `pass_rates` is the folder holding pass_rates.json (and both splits)."""
    import shutil
    from pathlib import Path

    from alignpipe import steps

    result = steps.run_component(
        "route", config, steps.typed_args("route", locals()),
        {"model": model.path, "data": prompts.path, "output_dir": pass_rates.path}, metrics=metrics, output=pass_rates)
    for art, name, split in ((easy, "easy.jsonl", "easy"), (hard, "hard.jsonl", "hard")):
        Path(art.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(pass_rates.path) / name, art.path)
        art.metadata.update({"rows": int(result.metrics[f"route/{split}"]), "kind": "sft" if split == "easy" else "prompts",
                             "threshold": threshold, "k": k})
