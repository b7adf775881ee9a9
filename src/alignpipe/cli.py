"""`alignpipe` command line: stages, data validation, config schemas, pipelines (run locally, compile,
submit, upload) and the demo (= `alignpipe run rlhf --local` with the embedded defaults).

User errors (bad config, bad data, missing model, storage faults) print one line per problem on
stderr and exit 2 — no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

USER_ERRORS: tuple[type[BaseException], ...] = ()


def _user_errors() -> tuple[type[BaseException], ...]:
    from alignpipe.config import ConfigError
    from alignpipe.data import DataError
    from alignpipe.models import ModelError

    errs: list[type[BaseException]] = [ConfigError, DataError, ModelError]
    try:
        from alignpipe.storage import StorageError

        errs.append(StorageError)
    except ImportError:  # pragma: no cover
        pass
    from alignpipe.stages.register import RegistrationError

    errs.append(RegistrationError)
    from alignpipe.kfp_local import PipelineError
    from alignpipe.pipelines.common import PlatformError

    errs += [PipelineError, PlatformError]
    from alignpipe.distributed import DistributedError
    from alignpipe.registry import RegistryError
    from alignpipe.trainjob import TrainJobError

    errs += [DistributedError, RegistryError, TrainJobError]
    return tuple(errs)


def _stage_module(name: str):
    import importlib

    return importlib.import_module(f"alignpipe.stages.{name}")


def cmd_stage(args) -> int:
    from alignpipe import config

    cfg = config.load(args.name, args.config, args.overrides)
    result = _stage_module(args.name).run(cfg)
    out = result.to_dict()
    out.pop("history", None)
    print(json.dumps(out, indent=2, default=str))
    if args.result:
        result.save(args.result)
    return 0


def cmd_data_validate(args) -> int:
    from alignpipe import data

    return data.validate_cli(args.path, args.kind)


def cmd_config_schema(args) -> int:
    from alignpipe import config

    print(json.dumps(config.json_schema(args.stage), indent=2))
    return 0


def cmd_demo(args) -> int:
    """The embedded demo: the rlhf pipeline through kfp.local with its defaults (base model tiny:SEED)."""
    from alignpipe import kfp_local

    params = {"seed": args.seed, "base_model": f"tiny:{args.seed}"}
    summary = kfp_local.run_local("rlhf", params, args.workdir)
    return 0 if summary["status"] == "succeeded" else 1


def cmd_run(args) -> int:
    from alignpipe import kfp_local

    if not args.local:
        print("error: only --local runs here; use `alignpipe submit NAME --host URL` for a cluster", file=sys.stderr)
        return 2
    pipeline = kfp_local.load(args.name)
    params = kfp_local.parse_params(pipeline, args.param)
    summary = kfp_local.run_local(args.name, params, args.workdir or f"out/{args.name}")
    return 0 if summary["status"] == "succeeded" else 1


def cmd_compile(args) -> int:
    from alignpipe import kfp_local

    for name, path in kfp_local.compile_all(args.out, image=args.image, gpu_image=args.gpu_image).items():
        print(f"{name}: {path}")
    return 0


def cmd_submit(args) -> int:
    from alignpipe import kfp_local

    pipeline = kfp_local.load(args.name, kfp_local.platform_from(args.image) if args.image else None)
    params = kfp_local.parse_params(pipeline, args.param)
    out = kfp_local.submit(args.name, args.host, params, experiment=args.experiment, namespace=args.namespace,
                           run_name=args.run_name, image=args.image)
    print(json.dumps(out, indent=2))
    return 0


def cmd_upload(args) -> int:
    from alignpipe import kfp_local

    out = kfp_local.upload(args.host, namespace=args.namespace, image=args.image, gpu_image=args.gpu_image,
                           version=args.version)
    print(json.dumps(out, indent=2))
    return 0


def cmd_params(args) -> int:
    from alignpipe import kfp_local

    for name, (kind, default) in kfp_local.parameters(kfp_local.load(args.name)).items():
        print(f"{name}\t{kind}\t{json.dumps(default)}")
    return 0


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

    c = sub.add_parser("config", help="config tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    sc = csub.add_parser("schema", help="print a stage's JSON schema")
    sc.add_argument("stage", choices=list(STAGE_CONFIGS))
    sc.set_defaults(func=cmd_config_schema)

    dm = sub.add_parser("demo", help="the rlhf pipeline on the embedded tiny model, locally (= run rlhf --local)")
    dm.add_argument("--workdir", default="out/demo")
    dm.add_argument("--seed", type=int, default=0)
    dm.set_defaults(func=cmd_demo)

    from alignpipe.kfp_local import PIPELINES

    r = sub.add_parser("run", help="run a pipeline through kfp.local on this machine")
    r.add_argument("name", help=f"pipeline: {', '.join(PIPELINES)}")
    r.add_argument("--local", action="store_true", help="run on this machine (kfp.local); required")
    r.add_argument("--workdir", help="outputs, logs, mlflow.db and summary.json (default out/NAME)")
    r.add_argument("--param", action="extend", nargs="+", default=[], metavar="NAME=VALUE",
                   help="pipeline parameter (YAML/JSON value), repeatable; list them with `alignpipe params NAME`")
    r.set_defaults(func=cmd_run)

    cp = sub.add_parser("compile", help="compile every pipeline to KFP YAML packages")
    cp.add_argument("--out", default="out/pipelines")
    cp.add_argument("--image", help="image of the CPU steps (default ALIGNPIPE_IMAGE or the release image)")
    cp.add_argument("--gpu-image", help="image of the training/eval steps (default ALIGNPIPE_GPU_IMAGE)")
    cp.set_defaults(func=cmd_compile)

    sm = sub.add_parser("submit", help="submit a pipeline run to a Kubeflow Pipelines API")
    sm.add_argument("name", help=f"pipeline: {', '.join(PIPELINES)}")
    sm.add_argument("--host", required=True, help="KFP API URL, e.g. http://localhost:8080")
    sm.add_argument("--experiment", default="alignpipe")
    sm.add_argument("--namespace", help="KFP namespace (multi-user); default ALIGNPIPE_NAMESPACE")
    sm.add_argument("--run-name")
    sm.add_argument("--image", help="image of the CPU steps")
    sm.add_argument("--param", action="extend", nargs="+", default=[], metavar="NAME=VALUE")
    sm.set_defaults(func=cmd_submit)

    up = sub.add_parser("upload", help="create or version every pipeline in a KFP API (the Helm upload job)")
    up.add_argument("--host", required=True)
    up.add_argument("--namespace")
    up.add_argument("--image")
    up.add_argument("--gpu-image")
    up.add_argument("--version", help="version name suffix (default: package version, git sha, time)")
    up.set_defaults(func=cmd_upload)

    pa = sub.add_parser("params", help="list a pipeline's parameters (name, type, default)")
    pa.add_argument("name")
    pa.set_defaults(func=cmd_params)

    from alignpipe import registry

    registry.add_cli(sub)
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
    errors = _user_errors()
    try:
        return args.func(args)
    except errors as e:
        for line in str(e).splitlines() or [type(e).__name__]:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    t0 = time.time()
    sys.exit(main())
