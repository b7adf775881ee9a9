"""`alignpipe diff`: weight-space diff of two checkpoints, on tiny models with hand-made, known updates."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from alignpipe import cli, models, registry
from alignpipe.evaluation import diff

Q = "model.layers.1.self_attn.q_proj.weight"  # 128 x 128
UP = "model.layers.0.mlp.up_proj.weight"  # 512 x 128
DOWN = "model.layers.1.mlp.down_proj.weight"  # 128 x 512


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("diff") / "base"
    shutil.copytree(models.resolve("tiny:0"), d)
    return d


def weights_file(folder: Path) -> Path:
    (f,) = folder.glob("*.safetensors")
    return f


def variant(base: Path, dest: Path, edit) -> tuple[Path, dict[str, torch.Tensor]]:
    """A copy of `base` whose weights were changed by edit(state_dict) (in place)."""
    shutil.copytree(base, dest)
    f = weights_file(dest)
    state = load_file(str(f))
    edit(state)
    save_file(state, str(f), metadata={"format": "pt"})
    return dest, load_file(str(weights_file(base)))


def by_name(d: diff.ModelDiff) -> dict[str, dict]:
    return {t["name"]: t for t in d.tensors}


def test_model_against_itself_is_all_zeros(base: Path) -> None:
    d = diff.diff_models(str(base), str(base))
    assert len(d.tensors) == 26 and not d.only_in_a and not d.only_in_b and not d.shape_mismatch
    for t in d.tensors:
        assert t["rel_norm"] == 0.0 and t["delta_norm"] == 0.0 and t["changed"] == 0 and t["changed_fraction"] == 0
        assert all(x == 0.0 for x in t.get("delta_singular_values", []))
        assert all(x == 0.0 for x in t.get("sigma_drift", []))
    assert [g["layer"] for g in d.layers] == ["0", "1", "other"]
    assert d.overall["rel_norm"] == 0.0 and d.overall["changed"] == 0 and d.overall["most_changed"] is None
    assert d.overall["numel"] == sum(t["numel"] for t in d.tensors) == 558_848


def test_rank_one_update_on_one_matrix(base: Path, tmp_path: Path) -> None:
    u = torch.zeros(128)
    u[[3, 40, 77]] = torch.tensor([0.5, -0.25, 0.125])
    v = torch.zeros(128)
    v[[0, 9, 10, 64, 127]] = torch.tensor([0.2, -0.1, 0.3, 0.05, -0.4])
    delta = torch.outer(u, v)  # 15 non-zero entries, all >= 0.00625 in magnitude

    def edit(state):
        state[Q] = state[Q] + delta

    b, sa = variant(base, tmp_path / "b", edit)
    d = diff.diff_models(str(base), str(b), top_k=4)
    t = by_name(d)[Q]
    moved = [x["name"] for x in d.tensors if x["changed"] or x["delta_norm"]]
    assert moved == [Q]
    want = float(u.norm() * v.norm() / sa[Q].norm())
    assert t["rel_norm"] == pytest.approx(want, rel=1e-5)
    assert t["changed"] == 15 and t["changed_fraction"] == pytest.approx(15 / 128 ** 2)
    s = t["delta_singular_values"]
    assert len(s) == 4 and s[0] == pytest.approx(float(u.norm() * v.norm()), rel=1e-5)
    assert s[1] < 1e-6 * s[0]  # rank 1
    assert t["delta_stable_rank"] == pytest.approx(1.0, abs=1e-5)
    # the per-layer and overall aggregates see exactly this one tensor
    layer1 = {g["layer"]: g for g in d.layers}["1"]
    assert layer1["changed"] == 15 and layer1["most_changed"] == Q
    assert layer1["delta_norm"] == pytest.approx(float(u.norm() * v.norm()), rel=1e-5)
    assert {g["layer"]: g for g in d.layers}["0"]["changed"] == 0
    assert d.overall["changed"] == 15 and d.overall["changed_fraction"] == pytest.approx(15 / 558_848)


def test_update_along_and_off_the_principal_directions(base: Path, tmp_path: Path) -> None:
    """Δ = c·u₁v₁ᵀ (A's top singular pair) lies entirely in the top-r subspace and moves σ₁ by exactly c/σ₁;
    Δ built from A's last singular vectors has no energy there."""
    state = load_file(str(weights_file(base)))
    a = state[Q].double()
    uu, ss, vh = torch.linalg.svd(a)
    c = 0.5 * float(ss[0])
    along = (c * torch.outer(uu[:, 0], vh[0])).float()
    off = (0.3 * torch.outer(uu[:, -1], vh[-1]) + 0.2 * torch.outer(uu[:, -2], vh[-2])).float()

    b1, _ = variant(base, tmp_path / "along", lambda s: s.__setitem__(Q, s[Q] + along))
    b2, _ = variant(base, tmp_path / "off", lambda s: s.__setitem__(Q, s[Q] + off))
    t1 = by_name(diff.diff_models(str(base), str(b1), rank=8))[Q]
    t2 = by_name(diff.diff_models(str(base), str(b2), rank=8))[Q]
    assert t1["principal_share_left"] == pytest.approx(1.0, abs=1e-4)
    assert t1["principal_share_right"] == pytest.approx(1.0, abs=1e-4)
    assert t1["random_share_left"] == t1["random_share_right"] == 8 / 128
    assert t1["sigma_drift"][0] == pytest.approx(0.5, rel=1e-4)  # σ₁(B) = σ₁ + c
    assert max(abs(x) for x in t1["sigma_drift"][1:]) < 1e-4  # the rest of the spectrum did not move
    assert t2["principal_share_left"] < 1e-6 and t2["principal_share_right"] < 1e-6
    assert t2["delta_singular_values"][:2] == pytest.approx([0.3, 0.2], rel=1e-4)


def test_sparse_update_counts_entries_beyond_the_tolerance(base: Path, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    up_idx = torch.randperm(512 * 128, generator=g)[:37]
    down_idx = torch.randperm(128 * 512, generator=g)[:20]

    def edit(state):
        state[UP].view(-1)[up_idx] += 0.01
        state[DOWN].view(-1)[down_idx[:12]] -= 0.02
        state[DOWN].view(-1)[down_idx[12:]] += 1e-7  # below the default tolerance (1e-5): not counted

    b, _ = variant(base, tmp_path / "sparse", edit)
    d = diff.diff_models(str(base), str(b))
    t = by_name(d)
    assert t[UP]["changed"] == 37 and t[UP]["changed_fraction"] == pytest.approx(37 / (512 * 128))
    assert t[DOWN]["changed"] == 12
    assert t[UP]["max_abs_delta"] == pytest.approx(0.01, rel=1e-3)
    assert d.overall["changed"] == 49
    # every touched entry counts with tolerance 0; with 0.015 only the 0.02 ones do
    assert by_name(diff.diff_models(str(base), str(b), tolerance=0.0))[DOWN]["changed"] == 20
    assert diff.diff_models(str(base), str(b), tolerance=0.015).overall["changed"] == 12


def test_cli_writes_json_and_html(base: Path, tmp_path: Path, capsys) -> None:
    b, _ = variant(base, tmp_path / "b", lambda s: s[UP].view(-1)[:10].add_(0.5))
    out = tmp_path / "report"
    assert cli.main(["diff", str(base), str(b), "--out", str(out), "--top-k", "3", "--tolerance", "1e-4"]) == 0
    printed = capsys.readouterr().out
    assert "changed 10 " in printed and str(out / "diff.json") in printed
    data = json.loads((out / "diff.json").read_text())
    assert data["settings"]["tolerance"] == 1e-4 and data["settings"]["top_k"] == 3
    assert data["overall"]["changed"] == 10 and data["overall"]["most_changed"] == UP
    up = next(t for t in data["tensors"] if t["name"] == UP)
    assert len(up["delta_singular_values"]) == 3
    assert up["rel_norm"] == pytest.approx(math.sqrt(10 * 0.25) / up["a_norm"], rel=1e-5)
    page = (out / "diff.html").read_text()
    assert page.count("<svg") == 3 and UP in page and "<script" not in page
    assert "src=" not in page and "href=" not in page and "@import" not in page  # nothing fetched


def test_missing_model_is_one_error_line(base: Path, tmp_path: Path, capsys) -> None:
    assert cli.main(["diff", str(base), str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nope" in err[0]
    assert not (tmp_path / "o").exists()


def test_lora_adapter_is_merged_into_its_base(base: Path, tmp_path: Path) -> None:
    """A PEFT adapter folder is compared as merged weights: W + (alpha/r)·B·A on the targeted matrices only."""
    from peft import LoraConfig, get_peft_model

    model, _ = models.load_policy(str(base), precision="fp32")
    peft = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], lora_dropout=0.0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in peft.base_model.model.model.layers:
            layer.self_attn.q_proj.lora_B["default"].weight.copy_(0.01 * torch.randn(128, 2, generator=g))
    q1 = peft.base_model.model.model.layers[1].self_attn.q_proj
    with torch.no_grad():
        want = (2.0 * q1.lora_B["default"].weight @ q1.lora_A["default"].weight).norm() / q1.base_layer.weight.norm()
    peft.save_pretrained(tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "config.json").exists()

    d = diff.diff_models(str(base), str(tmp_path / "adapter"))
    assert "LoRA adapter merged into" in d.model_b["source"]
    moved = sorted(t["name"] for t in d.tensors if t["delta_norm"] > 0)
    assert moved == ["model.layers.0.self_attn.q_proj.weight", Q]
    t = by_name(d)[Q]
    assert t["rel_norm"] == pytest.approx(float(want), rel=1e-4)
    assert t["delta_singular_values"][2] < 1e-5 * t["delta_singular_values"][0]  # rank <= r = 2


def test_registered_version_is_resolved_through_the_registry(base: Path, tmp_path: Path) -> None:
    """models:/NAME@ALIAS goes through the MLflow Model Registry (the session's sqlite store) and registry.pull."""
    import uuid

    from mlflow.tracking import MlflowClient

    b, _ = variant(base, tmp_path / "b", lambda s: s[UP].view(-1)[:3].add_(0.5))
    name = f"diff-{uuid.uuid4().hex[:6]}"
    client = MlflowClient()
    client.create_registered_model(name)
    mv = client.create_model_version(name, source=str(b))
    client.set_registered_model_alias(name, "champion", mv.version)
    d = diff.diff_models(str(base), f"models:/{name}@champion")
    assert d.model_b["source"] == f"models:/{name}@champion = version 1, {b}"
    assert d.overall["changed"] == 3 and d.overall["most_changed"] == UP
    assert not Path(d.model_b["path"]).exists()  # the pulled copy was a scratch folder, removed afterwards
    with pytest.raises(registry.RegistryError, match="has no alias 'nope'"):
        diff.diff_models(str(base), f"models:/{name}@nope")
