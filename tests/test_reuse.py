"""Content-addressed step reuse (issue 10 §3) and the checkpoint store's bookkeeping, on local folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def reuse_on(monkeypatch, tmp_path):
    monkeypatch.delenv("ALIGNPIPE_FORCE_RERUN", raising=False)
    monkeypatch.setenv("ALIGNPIPE_STATE_URI", str(tmp_path / "state"))
    return tmp_path


def _cfg(data: str, out: Path, **kw):
    from alignpipe.config import SFTConfig

    return SFTConfig(model="tiny", train_data=data, output_dir=str(out), max_length=32,
                     training=dict(max_steps=2, batch_size=4, learning_rate=1e-3, logging_steps=1), **kw)


def test_rerun_with_unchanged_inputs_reuses_and_a_changed_row_retrains(reuse_on, demo_data, capfd):
    import mlflow

    from alignpipe import storage, tracking
    from alignpipe.stages import sft

    tmp = reuse_on
    first = sft.run(_cfg(demo_data["sft_train"], tmp / "a"))
    assert "reused_from" not in first.lineage

    again = sft.run(_cfg(demo_data["sft_train"], tmp / "b", run_name="again"))  # run_name does not change the key
    assert again.lineage["reused_from"] == str(tmp / "a")
    assert again.metrics == first.metrics
    assert storage.read_manifest(tmp / "b").digest == storage.read_manifest(tmp / "a").digest
    assert f"reused {tmp / 'a'}" in capfd.readouterr().err
    mlflow.set_tracking_uri(tracking.tracking_uri())
    tags = mlflow.get_run(again.lineage["mlflow_run_id"]).data.tags
    assert tags["alignpipe.reused_from"] == str(tmp / "a")

    forced = sft.run(_cfg(demo_data["sft_train"], tmp / "c", reuse=False))
    assert "reused_from" not in forced.lineage

    rows = Path(demo_data["sft_train"]).read_text().splitlines()
    row = json.loads(rows[0])
    row["completion"][-1]["content"] += "0"  # one answer changes, every other byte stays
    changed = tmp / "changed.jsonl"
    changed.write_text("\n".join([json.dumps(row, separators=(",", ":"))] + rows[1:]) + "\n")
    retrained = sft.run(_cfg(str(changed), tmp / "d"))
    assert "reused_from" not in retrained.lineage


def test_reuse_refuses_an_output_that_changed_after_it_was_recorded(reuse_on):
    from alignpipe import storage
    from alignpipe.base import StageResult
    from alignpipe.config import SFTConfig
    from alignpipe.reuse import Step

    tmp = reuse_on
    (tmp / "src").mkdir()
    (tmp / "src" / "config.json").write_text("{}")
    storage.publish_dir(tmp / "src", tmp / "a")
    step = Step("sft", SFTConfig(train_data="x.jsonl", output_dir=str(tmp / "a"), tracking=False), train_data="d")
    step.record(StageResult("sft", str(tmp / "a"), {"train/steps": 2.0}))
    again = Step("sft", SFTConfig(train_data="x.jsonl", output_dir=str(tmp / "b"), tracking=False), train_data="d")
    assert again.reused().lineage["reused_from"] == str(tmp / "a")
    (tmp / "src" / "config.json").write_text('{"changed": 1}')
    storage.publish_dir(tmp / "src", tmp / "a")  # re-published with other content: a different digest
    assert again.reused() is None
    assert Step("sft", SFTConfig(train_data="x.jsonl", output_dir=str(tmp / "b"), tracking=False),
                train_data="other").reused() is None


def test_content_key_ignores_where_and_how_often_but_not_what(tmp_path):
    from alignpipe.config import SFTConfig
    from alignpipe.reuse import content_key

    def key(**kw):
        base = dict(model="tiny", train_data="x.jsonl", output_dir="out")
        return content_key("sft", SFTConfig(**{**base, **kw}), {"train_data": "d1"})

    assert key() == key(output_dir="elsewhere", run_name="r", tracking=False, train_data="y.jsonl")
    assert key() == key(training=dict(save_steps=7, save_minutes=1, save_total_limit=5))
    assert key() != key(training=dict(seed=1))
    assert key() != content_key("sft", SFTConfig(model="tiny", train_data="x.jsonl", output_dir="out"),
                                {"train_data": "d2"})


def test_a_hub_model_is_keyed_by_the_commit_its_revision_resolves_to(reuse_on, monkeypatch, capfd):
    """Offline (as in every test), the commit comes from the local Hugging Face cache: `main` moving to a new
    commit changes the key; a hub id that resolves nowhere is trained, never reused."""
    from alignpipe import storage
    from alignpipe.base import StageResult
    from alignpipe.config import SFTConfig
    from alignpipe.reuse import Step, model_digest

    tmp = reuse_on
    cache = tmp / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    refs = cache / "models--org--base-1b" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40)
    assert model_digest("org/base-1b") == "hub:org/base-1b@" + "a" * 40

    def cfg(out: str, model: str = "org/base-1b"):
        return SFTConfig(model=model, train_data="x.jsonl", output_dir=str(tmp / out), tracking=False)

    (tmp / "src").mkdir()
    (tmp / "src" / "config.json").write_text("{}")
    storage.publish_dir(tmp / "src", tmp / "a")
    first = Step("sft", cfg("a"), train_data="d")
    first.record(StageResult("sft", str(tmp / "a"), {"train/steps": 2.0}))
    assert Step("sft", cfg("b"), train_data="d").reused() is not None  # same commit: reused

    (refs / "main").write_text("b" * 40)  # the hub's main moved on (and the cache followed)
    moved = Step("sft", cfg("c"), train_data="d")
    assert moved.key != first.key
    assert moved.reused() is None

    unknown = Step("sft", cfg("d", model="org/not-cached"), train_data="d")
    assert unknown.inputs["model"] == "name:org/not-cached"
    assert unknown.reused() is None
    assert "the revision of org/not-cached could not be resolved" in capfd.readouterr().err


def test_store_keeps_the_last_k_complete_and_reports_partial_ones(tmp_path, monkeypatch, capfd):
    from alignpipe import storage
    from alignpipe.checkpoints import Checkpoints
    from alignpipe.config import SFTConfig

    monkeypatch.setenv("ALIGNPIPE_STATE_URI", str(tmp_path / "state"))
    cfg = SFTConfig(model="tiny", train_data="x.jsonl", output_dir=str(tmp_path / "out"),
                    training=dict(save_total_limit=2))
    store = Checkpoints("sft", cfg, "k" * 64)
    src = tmp_path / "src"
    src.mkdir()
    for step in (1, 2, 3):
        (src / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        store.publish(src, step)
    partial = storage.to_path(store.step_uri(4))
    partial.mkdir()
    (partial / "model.safetensors").write_text("half")
    complete, part = store.scan()
    assert [s for s, _ in complete] == [2, 3] and [s for s, _ in part] == [4]
    path = store.restore()
    assert path is not None and Path(path).name == "checkpoint-3"
    assert json.loads((Path(path) / "trainer_state.json").read_text()) == {"global_step": 3}
    assert "ignoring partial checkpoint" in capfd.readouterr().err
    store.clear()
    assert store.scan() == ([], [])


class _Artifact:  # what prepare_data needs of a KFP Dataset artifact: a path and a metadata dict
    def __init__(self, path: Path):
        self.path, self.metadata = str(path), {}


def test_prepare_data_reuses_a_data_set_taken_in_before_and_not_changed_bytes(reuse_on, capfd):
    """The same bytes (another URI) -> the converted data set is reused, not converted again; one changed byte
    behind the same URI -> taken in (converted) again."""
    from alignpipe import steps

    tmp = reuse_on
    rows = [{"instruction": f"Add {i} and {i}.", "input": "", "output": str(2 * i)} for i in range(20)]
    src = tmp / "alpaca.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def take(uri: str, n: int) -> tuple[dict, str, str]:
        art = _Artifact(tmp / f"out{n}" / "sft_train")
        steps.prepare_data({"sft_train": uri}, ["sft_train"], {"sft_train": art})
        return art.metadata, Path(art.path).read_text(), capfd.readouterr().out

    meta1, data1, out1 = take(str(src), 1)
    assert "converted 20 of 20 rows from alpaca" in out1 and "reused_from" not in meta1
    copy = tmp / "copy.jsonl"
    copy.write_bytes(src.read_bytes())
    meta2, data2, out2 = take(str(copy), 2)
    assert "reused" in out2 and "converted" not in out2, out2
    assert data2 == data1 and meta2["reused_from"] and meta2["digest"] == meta1["digest"]
    assert meta2["source"] == str(copy) and meta2["rows"] == 20 and meta2["source_format"] == "alpaca"
    src.write_text(src.read_text().replace('"output": "0"', '"output": "00"'))
    meta3, data3, out3 = take(str(src), 3)
    assert "converted 20 of 20 rows" in out3 and "reused_from" not in meta3 and meta3["digest"] != meta1["digest"]
