"""`alignpipe` command line: stages, data validation, config schemas, pipelines (run locally, compile,
submit, upload) and the demo (= `alignpipe run rlhf --local` with the embedded defaults).

All argparse code of the project lives here. User errors (every `alignpipe.base.UserError`: bad
config, data, model, storage, ...) print one line per problem on stderr and exit 2 — no traceback.
Importing this module sets no environment and imports nothing heavy: commands that train nothing
(`--help`, `config schema`, `data validate`, `params`, `compile`, `submit`, `upload`) never load torch.
"""

from __future__ import annotations

import argparse
import json
import sys

from alignpipe.base import UserError, report_user_error


def cmd_stage(args) -> int:
    from alignpipe import config, launch

    cfg = config.load(args.name, args.config, args.overrides)
    result = launch.run_stage(args.name, cfg)
    out = result.to_dict()
    out.pop("history", None)
    print(json.dumps(out, indent=2, default=str))
    if args.result:
        result.save(args.result)
    return 0


def cmd_data_validate(args) -> int:
    """Print `OK <path>: <rows> rows, format <format>` and return 0, or the problem lines (at most 20,
    then a count) on stderr and return 2."""
    from alignpipe import data

    report = data.validate(args.path, args.kind)
    if report.ok:
        print(report.summary())
        return 0
    print(report.summary(), file=sys.stderr)
    return 2


def cmd_data_convert(args) -> int:
    """Convert SRC into DST (see `alignpipe.data.convert`); print what was detected and converted, and every
    row that was not, on stdout; a source with unconvertible rows (more than --max-bad) is a user error."""
    from alignpipe.data import convert

    keys = dict(item.split("=", 1) for item in args.key if "=" in item)
    if len(keys) != len(args.key) or set(keys) - set(convert.DEFAULT_KEYS):
        raise convert.ConversionError([f"--key takes NAME=COLUMN with NAME one of {', '.join(convert.DEFAULT_KEYS)}"
                                       f" (got {', '.join(args.key)})"])
    report = convert.convert(args.src, args.dst, args.source_format, args.kind, args.to, keys, args.max_bad)
    print(report.summary())
    return 0


def cmd_mixture_search(args) -> int:
    from alignpipe import mixture

    result = mixture.search(mixture.load(args.config, args.overrides))
    print(json.dumps({"proposal": result["proposal"], "best_tried": result["best_tried"], "fit": result["fit"]},
                     indent=2))
    return 0


def cmd_reward_server(args) -> int:
    from alignpipe.sandbox import service

    return service.run_forever(args.host, args.port, args.token_file, args.no_auth, args.workers, args.max_requests,
                               args.max_body_mb, args.max_wall_s)


def cmd_model_pull(args) -> int:
    from alignpipe import registry

    got = registry.pull_model(args.ref, args.dir, overwrite=args.force, tracking_uri=args.tracking_uri)
    aliases = f" [{', '.join(got.aliases)}]" if got.aliases else ""
    print(f"pulled {got.name} v{got.version}{aliases} from {got.source} into {got.path} "
          f"({got.files} files, {got.total_bytes / 1e6:.1f} MB)")
    return 0


def cmd_model_kserve(args) -> int:
    from alignpipe import serving

    print(serving.render_kserve(args.model, name=args.name, namespace=args.namespace, s3_secret=args.s3_secret,
                                gpus=args.gpus, s3_endpoint=args.s3_endpoint, max_model_len=args.max_model_len,
                                tracking_uri=args.tracking_uri), end="")
    return 0


def cmd_diff(args) -> int:
    """Weight-space diff of two models (alignpipe.evaluation.diff): diff.json + diff.html in --out."""
    from alignpipe.evaluation import diff

    d = diff.diff_models(args.model_a, args.model_b, tolerance=args.tolerance, top_k=args.top_k, rank=args.rank,
                         tracking_uri=args.tracking_uri)
    paths = diff.write(d, args.out)
    print(diff.summary(d))
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


def cmd_config_schema(args) -> int:
    from alignpipe import config

    print(json.dumps(config.json_schema(args.stage), indent=2))
    return 0


def _params(args) -> dict:
    """A pipeline's parameters from `--preset` (if any), then `--param` items (which win)."""
    from alignpipe import runs

    pipeline = runs.load(args.name)
    params = runs.preset_params(args.preset, args.name) if getattr(args, "preset", None) else {}
    params.update(runs.parse_params(pipeline, args.param))
    return params


def cmd_demo(args) -> int:
    """The embedded demo: `alignpipe run rlhf --local --preset demo` (base model tiny:SEED)."""
    from alignpipe import runs

    params = runs.preset_params("demo", "rlhf")
    params.update({"seed": args.seed, "base_model": f"tiny:{args.seed}"})
    summary = runs.run_local("rlhf", params, args.workdir)
    return 0 if summary["status"] == "succeeded" else 1


def cmd_run(args) -> int:
    from alignpipe import runs

    if not args.local:
        print("error: only --local runs here; use `alignpipe submit NAME --host URL` for a cluster", file=sys.stderr)
        return 2
    if args.rerun:  # read by every training step (alignpipe.reuse); the kfp.local tasks inherit the environment
        import os

        os.environ["ALIGNPIPE_FORCE_RERUN"] = "1"
    summary = runs.run_local(args.name, _params(args), args.workdir or f"out/{args.name}")
    return 0 if summary["status"] == "succeeded" else 1


def cmd_compile(args) -> int:
    from alignpipe import runs

    for name, path in runs.compile_all(args.out, image=args.image, gpu_image=args.gpu_image, preset=args.preset,
                                       root=args.pipeline_root).items():
        print(f"{name}: {path}")
    return 0


def cmd_submit(args) -> int:
    from alignpipe import runs

    out = runs.submit(args.name, args.host, _params(args), experiment=args.experiment, namespace=args.namespace,
                      run_name=args.run_name, image=args.image, root=args.pipeline_root)
    print(json.dumps(out, indent=2))
    return 0


def cmd_upload(args) -> int:
    from alignpipe import runs

    out = runs.upload(args.host, namespace=args.namespace, image=args.image, gpu_image=args.gpu_image,
                      version=args.version, root=args.pipeline_root)
    print(json.dumps(out, indent=2))
    return 0


def cmd_params(args) -> int:
    from alignpipe import runs

    for name, (kind, default) in runs.parameters(runs.load(args.name)).items():
        print(f"{name}\t{kind}\t{json.dumps(default)}")
    return 0


ROOT_HELP = ("where a run's artifacts (models included) land, e.g. s3://bucket/pipelines "
             "(default ALIGNPIPE_ARTIFACT_ROOT, else KFP's own)")


def build_parser() -> argparse.ArgumentParser:
    from alignpipe.config import STAGE_CONFIGS

    p = argparse.ArgumentParser(prog="alignpipe", description="LLM post-training as Kubeflow pipelines.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stage", help="run one stage exactly as its pipeline component does")
    s.add_argument("name", choices=list(STAGE_CONFIGS))
    s.add_argument("--config", help="YAML config file (see `alignpipe config schema NAME`)")
    s.add_argument("--result", help="also write the StageResult JSON here")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. training.max_steps=50")
    s.set_defaults(func=cmd_stage)

    d = sub.add_parser("data", help="data tools")
    dsub = d.add_subparsers(dest="data_command", required=True)
    v = dsub.add_parser("validate", help="validate a data set before training")
    v.add_argument("path")
    v.add_argument("--kind", required=True, choices=["sft", "preference", "prompts"])
    v.set_defaults(func=cmd_data_validate)
    cv = dsub.add_parser("convert", help="convert a data set from another tool's format (alpaca, sharegpt, openai, "
                         "verl, openrlhf, vertex, hf-preference), or export to verl Parquet")
    cv.add_argument("src")
    cv.add_argument("dst", help="output .jsonl or .parquet (local or s3://)")
    cv.add_argument("--from", dest="source_format", default="auto",
                    choices=["auto", "alpaca", "sharegpt", "openai", "verl", "openrlhf", "vertex", "hf-preference",
                             "alignpipe"], help="source format (default: detect it and say what was detected)")
    cv.add_argument("--kind", choices=["sft", "preference", "prompts"], help="default: inferred from the rows")
    cv.add_argument("--to", default="alignpipe", choices=["alignpipe", "verl"], help="output format")
    cv.add_argument("--key", action="append", default=[], metavar="NAME=COLUMN",
                    help="openrlhf/vertex column names, e.g. --key input=question --key label=answer")
    cv.add_argument("--max-bad", type=int, default=0, help="write the rest when at most this many rows cannot be "
                    "converted (they are listed and counted); default 0: write nothing")
    cv.set_defaults(func=cmd_data_convert)

    c = sub.add_parser("config", help="config tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    sc = csub.add_parser("schema", help="print a stage's JSON schema")
    sc.add_argument("stage", choices=list(STAGE_CONFIGS))
    sc.set_defaults(func=cmd_config_schema)

    dm = sub.add_parser("demo", help="the rlhf pipeline on the embedded tiny model, locally "
                        "(= run rlhf --local --preset demo)")
    dm.add_argument("--workdir", default="out/demo")
    dm.add_argument("--seed", type=int, default=0)
    dm.set_defaults(func=cmd_demo)

    from alignpipe.pipelines import PIPELINES

    r = sub.add_parser("run", help="run a pipeline through kfp.local on this machine")
    r.add_argument("name", help=f"pipeline: {', '.join(PIPELINES)}")
    r.add_argument("--local", action="store_true", help="run on this machine (kfp.local); required")
    r.add_argument("--workdir", help="outputs, logs, mlflow.db and summary.json (default out/NAME)")
    r.add_argument("--preset", help="a preset of parameters: a shipped name (demo) or a YAML file; --param wins")
    r.add_argument("--param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="pipeline parameter (YAML/JSON value), repeatable; list them with `alignpipe params NAME`")
    r.add_argument("--rerun", action="store_true", help="train every step again, even where an output for the same "
                   "content key exists (default: reuse it; on a cluster set `reuse: false` in a step's <stage>_config)")
    r.set_defaults(func=cmd_run)

    cp = sub.add_parser("compile", help="compile every pipeline to KFP YAML packages")
    cp.add_argument("--out", default="out/pipelines")
    cp.add_argument("--image", help="image of the CPU steps (default ALIGNPIPE_IMAGE or the release image)")
    cp.add_argument("--gpu-image", help="image of the training/eval steps (default ALIGNPIPE_GPU_IMAGE)")
    cp.add_argument("--preset", help="compile NAME-PRESET.yaml packages whose defaults are the preset's (e.g. demo)")
    cp.add_argument("--pipeline-root", help=ROOT_HELP)
    cp.set_defaults(func=cmd_compile)

    sm = sub.add_parser("submit", help="submit a pipeline run to a Kubeflow Pipelines API")
    sm.add_argument("name", help=f"pipeline: {', '.join(PIPELINES)}")
    sm.add_argument("--host", required=True, help="KFP API URL, e.g. http://localhost:8080")
    sm.add_argument("--experiment", default="alignpipe")
    sm.add_argument("--namespace", help="KFP namespace (multi-user); default ALIGNPIPE_NAMESPACE")
    sm.add_argument("--run-name")
    sm.add_argument("--image", help="image of the CPU steps")
    sm.add_argument("--preset", help="a preset of parameters (name or YAML file); --param wins")
    sm.add_argument("--param", action="extend", nargs="+", default=[], metavar="NAME=VALUE")
    sm.add_argument("--pipeline-root", help=ROOT_HELP)
    sm.set_defaults(func=cmd_submit)

    up = sub.add_parser("upload", help="create or version every pipeline in a KFP API (the Helm upload job)")
    up.add_argument("--host", required=True)
    up.add_argument("--namespace")
    up.add_argument("--image")
    up.add_argument("--gpu-image")
    up.add_argument("--version", help="version name suffix (default: package version, git sha, time)")
    up.add_argument("--pipeline-root", help=ROOT_HELP)
    up.set_defaults(func=cmd_upload)

    pa = sub.add_parser("params", help="list a pipeline's parameters (name, type, default)")
    pa.add_argument("name")
    pa.set_defaults(func=cmd_params)

    mp = sub.add_parser("model", help="registered models (MLflow Model Registry)")
    msub = mp.add_subparsers(dest="model_command", required=True)
    pp = msub.add_parser(
        "pull", help="download a registered model version into a folder (verified, complete)",
        description="Download NAME@ALIAS or NAME/VERSION from the MLflow Model Registry (MLFLOW_TRACKING_URI) "
                    "into DIR. s3:// sources are checked against their MANIFEST.json; the folder is "
                    "renamed into place only once complete.")
    pp.add_argument("ref", help="NAME@ALIAS (e.g. alignpipe-demo@champion), NAME/VERSION, or models:/...")
    pp.add_argument("dir", help="folder to create (must not exist or be empty, unless --force)")
    pp.add_argument("--force", action="store_true", help="replace DIR if it is not empty")
    pp.add_argument("--tracking-uri", default=None, help="MLflow tracking server (default MLFLOW_TRACKING_URI)")
    pp.set_defaults(func=cmd_model_pull)
    ks = msub.add_parser(
        "kserve", help="print a KServe InferenceService (huggingface runtime, vLLM) + ServiceAccount for a model",
        description="Render the KServe manifests for a registered model (its s3:// folder, resolved through the "
                    "MLflow Model Registry) or an s3:// folder: `alignpipe model kserve NAME@champion | kubectl "
                    "apply -f -` (docs/serving.md).")
    ks.add_argument("model", help="models:/NAME@ALIAS, NAME@ALIAS, NAME/VERSION, or an s3:// model folder")
    ks.add_argument("--name", help="InferenceService name (default: the registered model's name)")
    ks.add_argument("--namespace", default="default", help="namespace; the S3 Secret must be there (default: default)")
    ks.add_argument("--s3-secret", help="S3 credentials Secret (default ALIGNPIPE_S3_SECRET, the chart's alignpipe-s3)")
    ks.add_argument("--s3-endpoint", help="S3 endpoint as the cluster reaches it, e.g. http://alignpipe-minio.ns:9000 "
                    "(default: the endpoint in effect here; none: AWS S3)")
    ks.add_argument("--gpus", type=int, default=1, help="GPUs per replica (vLLM tensor parallel); 0: CPU, HF backend")
    ks.add_argument("--max-model-len", type=int, help="vLLM's context length (default: the model's)")
    ks.add_argument("--tracking-uri", default=None, help="MLflow tracking server (default MLFLOW_TRACKING_URI)")
    ks.set_defaults(func=cmd_model_kserve)

    df = sub.add_parser("diff", help="weight-space diff of two models: per-layer update norm, share of weights "
                        "changed, singular-value drift (diff.json + diff.html)",
                        description="Compare every tensor two models share. MODEL: a local folder, an s3:// "
                        "folder, tiny[:SEED], or models:/NAME@ALIAS | models:/NAME/VERSION (docs/serving.md).")
    df.add_argument("model_a", help="the model before (e.g. the SFT model)")
    df.add_argument("model_b", help="the model after (e.g. models:/alignpipe-demo@champion)")
    df.add_argument("--out", default="out/diff", help="folder (or s3:// prefix) for diff.json and diff.html")
    df.add_argument("--tolerance", type=float, default=1e-5,
                    help="an entry counts as changed when |B-A| exceeds this (absolute; default 1e-5, 0: any change)")
    df.add_argument("--top-k", type=int, default=8, help="singular values of each update reported (default 8)")
    df.add_argument("--rank", type=int, default=8,
                    help="r of A's principal subspace in the off-principal diagnostic (default 8)")
    df.add_argument("--tracking-uri", default=None, help="MLflow tracking server for models:/ (default MLFLOW_TRACKING_URI)")
    df.set_defaults(func=cmd_diff)

    mx = sub.add_parser("mixture", help="domain mixtures for RL")
    mxsub = mx.add_subparsers(dest="mixture_command", required=True)
    ms = mxsub.add_parser("search", help="short RL proxy runs over candidate domain weightings, a fitted predictor "
                          "of held-out score from the weights, the best mixture proposed (MoDoMoDo-style)")
    ms.add_argument("--config", required=True, help="YAML: rl (stage config or path), eval_data, output_dir, ...")
    ms.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. proxy_steps=10")
    ms.set_defaults(func=cmd_mixture_search)

    rs = sub.add_parser("reward-server", help="serve code_tests executions in the sandbox over HTTP (docs/code-rewards.md)")
    rs.add_argument("--host", default="0.0.0.0")
    rs.add_argument("--port", type=int, default=8080)
    rs.add_argument("--workers", type=int, help="executions at a time per batch (default: CPU count)")
    rs.add_argument("--max-requests", type=int, default=4, help="batches at once; more get 429")
    rs.add_argument("--max-body-mb", type=int, default=32)
    rs.add_argument("--max-wall-s", type=float, default=30.0, help="cap on a batch's per-execution time limit")
    rs.add_argument("--token-file", help="file holding the shared token (else ALIGNPIPE_REWARD_TOKEN)")
    rs.add_argument("--no-auth", action="store_true", help="serve without a token (local testing only)")
    rs.set_defaults(func=cmd_reward_server)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # `stage NAME --config F k=v ...`: argparse binds a positional list only once, so overrides that
    # follow an option come back as extras; they are overrides when they look like key=value.
    args, extras = parser.parse_known_args(argv)
    if extras:
        if getattr(args, "command", None) == "stage" and all("=" in e and not e.startswith("-") for e in extras):
            args.overrides = list(args.overrides or []) + extras
        else:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
    from alignpipe.launch import quiet_libraries

    quiet_libraries()
    try:
        return args.func(args)
    except UserError as e:
        return report_user_error(e)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
