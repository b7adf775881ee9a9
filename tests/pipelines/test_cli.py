"""CLI: bad input gets one line on stderr and a non-zero exit before anything runs; submit/upload against a
stub of the KFP REST API."""

import json
import socket
import time

import pytest
import yaml

from alignpipe import cli
from kfp_stub import KfpStub


def _one_line_error(capsys, argv, match):
    t = time.perf_counter()
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err
    return time.perf_counter() - t


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("argv, match", [
    (["run", "nope", "--local"], "unknown pipeline 'nope' (choose one of: rlhf, rlvr, preference, sft, sft-rl-routed, staged-rl)"),
    (["run", "rlhf", "--local", "--param", "sft_stepz=3"], "sft_stepz: unknown parameter of alignpipe-rlhf"),
    (["run", "rlhf", "--local", "--param", "sft_steps=lots"], "parameter sft_steps: expected an integer"),
    (["run", "rlhf", "--local", "--param", "rl_config=[1, 2]"], "parameter rl_config: expected a JSON object"),
    (["run", "rlhf", "--local", "--param", 'rl_config={"grpo": {"num_generationz": 4}}'],
     "rl_config: grpo.num_generationz: unknown key"),
    (["run", "rlhf", "--local", "--param", "noequals"], "must look like name=value"),
    (["submit", "nope", "--host", "http://127.0.0.1:1"], "unknown pipeline 'nope'"),
    (["submit", "sft", "--host", "http://127.0.0.1:1", "--param", "evaluate_k=zero"], "evaluate_k: expected an integer"),
])
def test_bad_input_is_one_line(capsys, tmp_path, argv, match):
    _one_line_error(capsys, argv + (["--workdir", str(tmp_path / "w")] if argv[0] == "run" else []), match)
    assert not (tmp_path / "w").exists()  # nothing ran


def test_unreachable_host_fails_fast(capsys):
    port = _closed_port()
    secs = _one_line_error(capsys, ["submit", "sft", "--host", f"http://127.0.0.1:{port}"], "KFP API unreachable")
    assert secs < 15
    _one_line_error(capsys, ["upload", "--host", f"http://127.0.0.1:{port}"], "KFP API unreachable")
    _one_line_error(capsys, ["submit", "sft", "--host", "127.0.0.1:8080"], "with its scheme")


def test_run_requires_local(capsys):
    assert cli.main(["run", "rlhf"]) == 2
    assert "only --local" in capsys.readouterr().err


def test_compile_writes_every_pipeline(tmp_path, capsys):
    assert cli.main(["compile", "--out", str(tmp_path), "--image", "reg.example/x:2"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == ["preference.yaml", "rlhf.yaml", "rlvr.yaml",
                                                               "sft-rl-routed.yaml", "sft.yaml", "staged-rl.yaml"]
    spec = next(yaml.safe_load_all((tmp_path / "sft.yaml").read_text()))
    assert spec["deploymentSpec"]["executors"]["exec-register"]["container"]["image"] == "reg.example/x:2"


def test_submit_posts_a_run(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNPIPE_PIPELINE_SERVICE_ACCOUNT", "alignpipe-pipeline-runner")
    token = tmp_path / "token"
    token.write_text("sa-token-123")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    with KfpStub() as stub:
        rc = cli.main(["submit", "rlvr", "--host", stub.url, "--experiment", "team-exp", "--namespace", "team-a",
                       "--param", "rl_steps=7", "--param", 'rewards=[{"name": "exact_match", "weight": 2}]'])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert json.loads(out[out.index("{"):])["run_id"] == "run-1"
    [exp] = stub.calls("POST", "/apis/v2beta1/experiments")
    exp_body = json.loads(exp["body"])
    assert exp_body["display_name"] == "team-exp" and exp_body["namespace"] == "team-a"
    [run] = stub.calls("POST", "/apis/v2beta1/runs")
    body = json.loads(run["body"])
    assert body["experiment_id"] == "exp-1"
    assert body["service_account"] == "alignpipe-pipeline-runner"
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "alignpipe-rlvr"
    assert "secretAsEnv" in json.dumps(body["pipeline_spec"]["platform_spec"])
    assert body["runtime_config"]["parameters"] == {"rl_steps": 7, "rewards": [{"name": "exact_match", "weight": 2}]}
    assert run["headers"].get("authorization") == "Bearer sa-token-123"


def test_submit_rejects_bad_config_before_calling_the_api(capsys):
    with KfpStub() as stub:
        _one_line_error(capsys, ["submit", "rlvr", "--host", stub.url, "--param",
                                 'rewards=[{"name": "reward_model"}]'], "reward_model is not set")
    assert stub.requests == []


def test_upload_creates_then_versions(capsys, monkeypatch):
    monkeypatch.setenv("ALIGNPIPE_IMAGE", "reg.example/alignpipe:9")
    with KfpStub() as stub:
        assert cli.main(["upload", "--host", stub.url]) == 0
        created = stub.calls("POST", "/apis/v2beta1/pipelines/upload")
        assert sorted(r["query"]["name"][0] for r in created) == [
            "alignpipe-preference", "alignpipe-rlhf", "alignpipe-rlvr", "alignpipe-sft", "alignpipe-sft-rl-routed",
            "alignpipe-staged-rl"]
        for r in created:  # multipart body holds the compiled package with the env's image
            assert b"reg.example/alignpipe:9" in r["body"] and b"PIPELINE DEFINITION" in r["body"]
        assert stub.calls("POST", "/apis/v2beta1/pipelines/upload_version") == []
        assert cli.main(["upload", "--host", stub.url, "--version", "v2"]) == 0
        versions = stub.calls("POST", "/apis/v2beta1/pipelines/upload_version")
        assert sorted(r["query"]["name"][0] for r in versions) == [
            "alignpipe-preference-v2", "alignpipe-rlhf-v2", "alignpipe-rlvr-v2", "alignpipe-sft-rl-routed-v2",
            "alignpipe-sft-v2", "alignpipe-staged-rl-v2"]
        assert {r["query"]["pipelineid"][0] for r in versions} == set(stub.existing.values())
    capsys.readouterr()


def test_existing_commands_still_work(capsys):
    assert cli.main(["config", "schema", "sft"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "SFTConfig"


def test_presets_bad_name_unknown_parameter_and_own_file(tmp_path, capsys):
    """`--preset`: a shipped name or a YAML file; a typo'd parameter is refused in one line, not ignored."""
    assert cli.main(["run", "sft", "--local", "--preset", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--preset nope: neither a shipped preset (demo" in err[0]
    bad = tmp_path / "mine.yaml"
    bad.write_text("base_model: tiny\nsft_stepz: 3\n")
    assert cli.main(["run", "sft", "--local", "--preset", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sft_stepz: not a parameter of any pipeline" in err[0]
    from alignpipe import runs

    good = tmp_path / "good.yaml"
    good.write_text("base_model: tiny\nsft_steps: 3\nrl_steps: 2\npipelines: {sft: {sft_steps: 5}}\n")
    assert runs.preset_params(str(good), "sft") == {"base_model": "tiny", "sft_steps": 5}  # rl_steps: not sft's
    assert runs.preset_params(str(good), "rlvr")["sft_steps"] == 3


def test_run_rerun_flag_reaches_the_steps_environment(monkeypatch, tmp_path):
    """`alignpipe run NAME --local --rerun` sets ALIGNPIPE_FORCE_RERUN for the kfp.local tasks (which inherit the
    environment; alignpipe.reuse reads it: tests/test_reuse.py). The runner here is a fake that records it."""
    from alignpipe import runs

    seen = []

    def fake_run_local(name, params, workdir):  # a fake runner: only the environment matters here
        import os

        seen.append(os.environ.get("ALIGNPIPE_FORCE_RERUN"))
        return {"status": "succeeded"}

    monkeypatch.setattr(runs, "run_local", fake_run_local)
    monkeypatch.delenv("ALIGNPIPE_FORCE_RERUN", raising=False)
    assert cli.main(["run", "sft", "--local", "--workdir", str(tmp_path)]) == 0
    assert cli.main(["run", "sft", "--local", "--rerun", "--workdir", str(tmp_path)]) == 0
    assert seen == [None, "1"]
