"""Benchmark: alignpipe.storage publish_dir/fetch vs boto3's default upload_file/download_file.

Not a test. Starts its own moto S3 server on 127.0.0.1 (a free port, own process group, stopped at the
end), writes a model-like folder (4 safetensors-like files of random bytes in the ratio 4:3:2:1 plus small
json files; total ``--size-mb``, default 1024), then for ``--runs`` rounds (default 3) times:

- alignpipe upload   = ``storage.publish_dir(folder, s3://bench/alignpipe/<run>)`` — includes sha256 of
  every byte, the size verification listing and the manifest
- alignpipe download = ``storage.fetch(s3://bench/alignpipe/<run>)`` into an empty cache — includes the
  sha256 check of every byte against the manifest
- boto3 upload       = ``boto3.client("s3").upload_file`` for each file in a loop (default TransferConfig)
- boto3 download     = ``download_file`` for each file in a loop (default TransferConfig), no checksums

and prints the medians and the ratio boto3/alignpipe (>1 means alignpipe is faster), writing JSON to
``out/bench/storage.json``.

    .venv/bin/python bench/bench_storage.py --size-mb 1024
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.integration.services (the moto launcher)

from tests.integration import services  # noqa: E402

MiB = 1 << 20


def make_model_dir(d: Path, size_mb: int) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    total = size_mb * MiB
    shares = [0.4, 0.3, 0.2, 0.1]
    files = []
    for i, share in enumerate(shares):
        p = d / f"model-{i + 1:05d}-of-00004.safetensors"
        n = int(total * share)
        with open(p, "wb") as f:
            left = n
            while left:
                b = os.urandom(min(16 * MiB, left))
                f.write(b)
                left -= len(b)
        files.append(p)
    for name, obj in {
        "config.json": {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 896},
        "generation_config.json": {"max_new_tokens": 256},
        "tokenizer_config.json": {"model_max_length": 32768},
        "model.safetensors.index.json": {"weight_map": {f"layer.{i}": files[i % 4].name for i in range(64)}},
    }.items():
        (d / name).write_text(json.dumps(obj))
        files.append(d / name)
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "storage.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="alignpipe-bench-"))
    srv = None
    try:
        model = work / "model"
        files = make_model_dir(model, args.size_mb)
        nbytes = sum(p.stat().st_size for p in files)
        # no IAM auth in the benchmark: it measures transfer, and boto3 and alignpipe get the same server
        srv = services.start_s3(work / "moto", buckets=("bench",), auth=False)
        os.environ.update(srv.env)
        os.environ["ALIGNPIPE_CACHE_DIR"] = str(work / "cache")
        from alignpipe import storage

        boto = srv.client()  # boto3 defaults: TransferConfig() (8 MiB parts, 10 threads), default checksums
        times: dict[str, list[float]] = {k: [] for k in ("alignpipe_upload", "alignpipe_download", "boto3_upload", "boto3_download")}
        for r in range(args.runs):
            # alignpipe
            t = time.perf_counter()
            storage.publish_dir(model, f"s3://bench/alignpipe/{r}")
            times["alignpipe_upload"].append(time.perf_counter() - t)
            shutil.rmtree(work / "cache", ignore_errors=True)
            t = time.perf_counter()
            got = storage.fetch(f"s3://bench/alignpipe/{r}")
            times["alignpipe_download"].append(time.perf_counter() - t)
            assert sum(p.stat().st_size for p in got.rglob("*") if p.is_file() and p.name != "MANIFEST.json") == nbytes
            shutil.rmtree(work / "cache", ignore_errors=True)
            # boto3, same files, one after another
            t = time.perf_counter()
            for p in files:
                boto.upload_file(str(p), "bench", f"boto3/{r}/{p.name}")
            times["boto3_upload"].append(time.perf_counter() - t)
            dl = work / "boto3-dl"
            dl.mkdir(exist_ok=True)
            t = time.perf_counter()
            for p in files:
                boto.download_file("bench", f"boto3/{r}/{p.name}", str(dl / p.name))
            times["boto3_download"].append(time.perf_counter() - t)
            shutil.rmtree(dl)
            # free the server's memory between rounds
            for prefix in (f"alignpipe/{r}/", f"boto3/{r}/"):
                keys = [o["Key"] for o in boto.list_objects_v2(Bucket="bench", Prefix=prefix).get("Contents", [])]
                if keys:
                    boto.delete_objects(Bucket="bench", Delete={"Objects": [{"Key": k} for k in keys]})
            print(f"run {r + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)

        med = {k: statistics.median(v) for k, v in times.items()}
        result = {
            "size_mb": args.size_mb,
            "bytes": nbytes,
            "runs": args.runs,
            "times_s": times,
            "median_s": med,
            "ratio_upload": med["boto3_upload"] / med["alignpipe_upload"],
            "ratio_download": med["boto3_download"] / med["alignpipe_download"],
            "ratio_total": (med["boto3_upload"] + med["boto3_download"]) / (med["alignpipe_upload"] + med["alignpipe_download"]),
            "settings": {k: v for k, v in vars(storage.S3Settings.from_env()).items() if "key" not in k and "token" not in k},
            "server": "moto_server (loopback)",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "note": "alignpipe times include sha256 of every byte (manifest on upload, verification on download); "
            "boto3 times are plain transfers with its default TransferConfig, files one after another",
        }
        print(f"\n{'':10}{'alignpipe':>12}{'boto3':>12}{'ratio':>9}   ({nbytes / MiB:.0f} MiB, median of {args.runs})")
        for op in ("upload", "download"):
            a, b = med[f"alignpipe_{op}"], med[f"boto3_{op}"]
            print(f"{op:10}{a:>11.2f}s{b:>11.2f}s{b / a:>8.2f}x   ({nbytes / MiB / a:.0f} vs {nbytes / MiB / b:.0f} MiB/s)")
        print(f"{'total':10}{med['alignpipe_upload'] + med['alignpipe_download']:>11.2f}s"
              f"{med['boto3_upload'] + med['boto3_download']:>11.2f}s{result['ratio_total']:>8.2f}x")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"wrote {out}")
        return 0
    finally:
        if srv is not None:
            srv.stop()
        services.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
