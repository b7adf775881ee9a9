"""`alignpipe` command line: stages, data validation, config schemas, the demo.

User errors (bad config, bad data, missing model, storage faults) print one line per problem on
stderr and exit 2 — no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

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
    from alignpipe.chain import run_demo

    summary = run_demo(Path(args.workdir), seed=args.seed)
    return 0 if summary["status"] == "succeeded" else 1


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

    dm = sub.add_parser("demo", help="the whole rlhf chain on the embedded tiny model (CPU)")
    dm.add_argument("--workdir", default="out/demo")
    dm.add_argument("--seed", type=int, default=0)
    dm.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
