"""GPU check (issue 9 §5): the real-model path end to end, on one GPU, in a few minutes.

Not a test. A maintainer runs it when a GPU is available:

    .venv/bin/python bench/gpu_check.py                      # a 0.5B-shaped model built locally, on the GPU
    .venv/bin/python bench/gpu_check.py --model Qwen/Qwen2.5-0.5B-Instruct   # or a real one (hub id or folder)
    .venv/bin/python bench/gpu_check.py --cpu                # the tiny model on the CPU (tests/bench runs this)

Steps: write the demo data; build the model in the layout a hub download has (config.json,
generation_config.json, model.safetensors, tokenizer files) unless --model names one; SFT -> GRPO (vLLM
rollouts when vLLM is installed and a GPU is present, else HF generate) -> evaluate base / SFT / RL (vLLM when
usable) -> register in MLflow (sqlite under --out unless MLFLOW_TRACKING_URI is set). Each stage runs through
`alignpipe.launch.run_stage`, as the CLI and the components do, with the schema's precision (`auto`: bf16
autocast over fp32 weights on a GPU). Prints seconds and tokens/s per stage and SFT's model FLOPs
utilisation (6 x parameters x trained tokens / seconds / the GPU's dense bf16 peak), and writes
OUT/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

#: Dense bf16 peak FLOP/s by GPU name (substring of torch.cuda.get_device_name()).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}

#: A Qwen2.5-0.5B-shaped model (the tokenizer is alignpipe's character-level one, so no download is needed).
SMALL = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
             intermediate_size=4864)

SIZES = {  # per mode: stage settings
    "cpu": dict(sft_steps=2, batch=8, max_length=32, rl_steps=1, rl_batch=8, generations=4, new_tokens=5,
                eval_limit=4, eval_k=1, lr=1e-3),
    "gpu": dict(sft_steps=60, batch=32, max_length=64, rl_steps=10, rl_batch=32, generations=8, new_tokens=16,
                eval_limit=200, eval_k=4, lr=1e-4),
}


def build_small_model(out: Path) -> Path:
    """A 0.5B-shaped Qwen2 model with the tiny model's tokenizer, saved as a hub download is laid out."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from alignpipe.models.tiny import build_tokenizer

    tok = build_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), max_position_embeddings=4096, tie_word_embeddings=True,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                         rope_theta=1_000_000.0, **SMALL)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def parameters(model_dir: str) -> int:
    from safetensors import safe_open

    total = 0
    for f in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


def last(history: list[dict], key: str) -> float | None:
    vals = [h[key] for h in history if key in h]
    return float(vals[-1]) if vals else None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="tiny model on the CPU, a few steps (what the test runs)")
    ap.add_argument("--model", default=None, help="hub id or model folder (default: built locally)")
    ap.add_argument("--out", default="out/gpu_check", help="work folder (data, models, metrics, MLflow store)")
    args = ap.parse_args(argv)

    import torch

    mode = "cpu" if args.cpu else "gpu"
    if mode == "gpu" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU here (use --cpu for the tiny CPU mode)")
    s = SIZES[mode]
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")

    from alignpipe import config as C
    from alignpipe.data.demo import write_demo_data
    from alignpipe.launch import run_stage
    from alignpipe.models.generate import vllm_usable

    data = write_demo_data(out / "data", seed=0, max_operand=30, preference_pairs=50, eval_pairs=max(50, s["eval_limit"]))
    base = args.model or ("tiny" if mode == "cpu" else str(build_small_model(out / "models" / "base")))
    models = out / "models"
    report: dict = {"mode": mode, "model": base, "device": torch.cuda.get_device_name() if mode == "gpu" else "cpu",
                    "vllm": vllm_usable(), "stages": {}}

    def stage(name: str, cfg) -> object:
        t = time.perf_counter()
        result = run_stage(name, cfg)
        report["stages"][name] = {"seconds": round(time.perf_counter() - t, 2)}
        return result

    train = dict(batch_size=s["batch"], logging_steps=1, warmup_steps=0)
    sft = stage("sft", C.SFTConfig(model=base, train_data=data["sft_train"], output_dir=str(models / "sft"),
                                   max_length=s["max_length"], tracking=True,
                                   training=dict(train, max_steps=s["sft_steps"], learning_rate=s["lr"])))
    rl = stage("rl", C.RLConfig(model=sft.output, train_data=data["rl_train"], output_dir=str(models / "rl"),
                                tracking=True, rewards=[dict(name="exact_match")],
                                generation=dict(max_new_tokens=s["new_tokens"], temperature=1.0),
                                grpo=dict(num_generations=s["generations"]),
                                training=dict(train, batch_size=s["rl_batch"], max_steps=s["rl_steps"],
                                              learning_rate=s["lr"] / 10, lr_scheduler="constant")))
    metrics_path = out / "eval.json"
    stage("evaluate", C.EvaluateConfig(models={"base": base, "sft": sft.output, "rl": rl.output},
                                       data=data["eval"], output=str(metrics_path), k=s["eval_k"],
                                       max_new_tokens=s["new_tokens"], limit=s["eval_limit"],
                                       bootstrap_resamples=0 if mode == "cpu" else 200, kl=mode == "gpu"))
    reg = stage("register", C.RegisterConfig(model=rl.output, metrics=str(metrics_path), metrics_key="rl",
                                             model_name=f"gpu-check-{mode}"))

    # tokens/s: trained tokens (SFT, from TRL's num_tokens), prompt + completion tokens (GRPO), greedy answer tokens
    # (evaluate: mean answer length x prompts x models; the k samples come on top)
    st = report["stages"]
    sft_tokens = last(sft.history, "num_tokens")
    rl_tokens = last(rl.history, "num_tokens")
    ev = json.loads(metrics_path.read_text())["models"]
    eval_tokens = 0.0
    for m in ev.values():
        eval_tokens += float(m.get("response_length") or 0.0) * float(m.get("n") or 0.0)
    # SFT and RL: over the trainer's own train_runtime (loading, tokenising and saving left out)
    runtimes = {"sft": last(sft.history, "train_runtime"), "rl": last(rl.history, "train_runtime")}
    for name, tokens in (("sft", sft_tokens), ("rl", rl_tokens), ("evaluate", eval_tokens)):
        if tokens:
            seconds = runtimes.get(name) or st[name]["seconds"]
            st[name]["tokens"] = int(tokens)
            st[name]["tokens_per_s"] = round(tokens / seconds, 1)
    st["register"]["output"] = reg.output
    n_params = parameters(sft.output)
    report["parameters"] = n_params
    peak = next((v for k, v in PEAK_BF16.items() if k in report["device"]), None)
    report["sft_mfu"] = (round(6 * n_params * sft_tokens / (runtimes["sft"] or st["sft"]["seconds"]) / peak, 4)
                         if peak and sft_tokens else None)
    report["accuracy"] = {k: v.get("accuracy") for k, v in ev.items()}

    print(f"gpu_check ({mode}, {report['device']}, {n_params / 1e6:.1f}M parameters, vLLM: {report['vllm']})")
    for name, r in st.items():
        rate = f"{r['tokens_per_s']:>10.1f} tokens/s" if "tokens_per_s" in r else ""
        print(f"  {name:<9} {r['seconds']:>8.1f} s {rate}")
    mfu = report["sft_mfu"]
    print(f"  SFT MFU: {'n/a (no known GPU peak)' if mfu is None else f'{mfu:.1%}'}")
    print(f"  accuracy: {report['accuracy']}")
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()
