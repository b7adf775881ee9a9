"""Registry, build() from config specs with weights, score(), dotted-path custom rewards."""

from __future__ import annotations

import math
import textwrap
from types import SimpleNamespace

import pytest

from alignpipe import rewards
from alignpipe.rewards import build, get, names, register, score


def spec(name, weight=1.0, **kwargs):
    """Duck-typed like alignpipe.config.RewardSpec (name, weight, kwargs)."""
    return SimpleNamespace(name=name, weight=weight, kwargs=kwargs)


def test_names_and_get():
    assert names() == ["code_tests", "exact_match", "format", "label", "math_verify", "reward_model"]
    assert get("exact_match") is rewards.exact_match_reward
    assert get("math_verify") is rewards.math_verify_reward


def test_unknown_name():
    with pytest.raises(ValueError) as err:
        get("exact")
    assert str(err.value).startswith(
        "unknown reward 'exact'; choose one of: code_tests, exact_match, format, label, math_verify, reward_model"
    )
    with pytest.raises(ValueError, match="unknown reward 'nope'; choose one of: code_tests, exact_match"):
        build([spec("nope")])


def test_get_reward_model_explains_it_needs_a_model():
    with pytest.raises(ValueError, match="needs a trained reward model"):
        get("reward_model")


def test_build_names_weights_and_options():
    funcs, weights = build([spec("exact_match", 2.0), spec("format", 0.5, pattern=r"\d+", mode="search")])
    assert [f.__name__ for f in funcs] == ["exact_match", "format"]
    assert weights == [2.0, 0.5]
    # options are bound: the default think/answer pattern would give 0.0 here
    assert funcs[1](["p"], ["x 42"]) == [1.0]
    assert funcs[0](prompts=["p"], completions=["4"], answer=["4"]) == [1.0]


def test_build_accepts_dicts_and_default_weight():
    funcs, weights = build([{"name": "label"}, {"name": "exact_match", "weight": 0}])
    assert [f.__name__ for f in funcs] == ["label", "exact_match"]
    assert weights == [1.0, 0.0]


def test_build_repeated_names_are_made_unique():
    funcs, _ = build([spec("format"), spec("format", pattern="x", mode="search")])
    assert [f.__name__ for f in funcs] == ["format", "format_2"]


def test_build_rejects_bad_options_and_weights():
    with pytest.raises(ValueError, match=r"reward 'format' got unknown option\(s\) patern \(its options: mode, pattern\)"):
        build([spec("format", patern="x")])
    with pytest.raises(ValueError, match="not a valid regular expression"):
        build([spec("format", pattern="(")])
    with pytest.raises(ValueError, match="weight must be a finite number"):
        build([spec("exact_match", float("nan"))])
    with pytest.raises(ValueError, match="weight 'heavy' is not a number"):
        build([spec("exact_match", "heavy")])
    with pytest.raises(ValueError, match="no rewards configured"):
        build([])


def test_build_reward_model_without_path():
    with pytest.raises(ValueError) as err:
        build([spec("exact_match"), spec("reward_model")])
    assert "reward 'reward_model' needs a trained reward model: pass reward_model_path" in str(err.value)


def test_built_functions_take_trl_keyword_arguments():
    """TRL calls reward_func(prompts=, completions=, completion_ids=, **columns, trainer_state=, log_extra=, ...)."""
    funcs, _ = build([spec("exact_match"), spec("math_verify"), spec("label"), spec("format")])
    for func in funcs:
        values = func(
            prompts=[[{"role": "user", "content": "2+2?"}]] * 2,
            completions=[[{"role": "assistant", "content": "<think>a</think><answer>4</answer>"}],
                         [{"role": "assistant", "content": "5"}]],
            completion_ids=[[1, 2], [3]],
            answer=["4", "4"],
            label=["4", "4"],
            difficulty=[0.1, 0.2],
            trainer_state=None,
            log_extra=lambda *a, **k: None,
            log_metric=lambda *a, **k: None,
        )
        assert values == [1.0, 0.0], func.__name__


def test_score_each_reward_and_weighted_total():
    funcs, weights = build([spec("exact_match", 2.0), spec("format", 0.5)])
    completions = ["<think>t</think><answer>4</answer>", "4", "<think>t</think><answer>9</answer>"]
    result = score(funcs, weights, ["p"] * 3, completions, answer=["4", "4", None])
    assert list(result) == ["exact_match", "format", "total"]
    assert result["format"] == [1.0, 0.0, 1.0]
    assert result["exact_match"][:2] == [1.0, 1.0] and math.isnan(result["exact_match"][2])
    assert result["total"] == [2.5, 2.0, 0.5]  # a None (NaN) is left out of the sum, as in TRL


def test_score_total_nan_when_nothing_applies_and_length_checks():
    funcs, weights = build([spec("exact_match")])
    result = score(funcs, weights, ["p"], ["4"], answer=[None])
    assert math.isnan(result["total"][0])
    with pytest.raises(ValueError, match="1 reward functions but 2 weights"):
        score(funcs, [1.0, 2.0], ["p"], ["4"], answer=["4"])

    def short(prompts, completions, **kwargs):
        return [1.0]

    with pytest.raises(ValueError, match="reward 'short' returned 1 values for 2 completions"):
        score([short], [1.0], ["p", "q"], ["a", "b"])


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    package = tmp_path / "my_rewards_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(textwrap.dedent("""
        def brevity(prompts, completions, max_chars=5, **kwargs):
            return [1.0 if len(c) <= max_chars else 0.0 for c in completions]

        NOT_A_FUNCTION = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards_pkg.mod"


@pytest.mark.parametrize("sep", [":", "."])
def test_dotted_path_custom_reward(custom_module, sep):
    path = f"{custom_module}{sep}brevity"
    assert get(path)(["p"], ["abc", "abcdefgh"]) == [1.0, 0.0]
    funcs, weights = build([spec(path, 3.0, max_chars=10)])
    assert funcs[0].__name__ == "brevity"
    assert funcs[0](["p"], ["abcdefgh"]) == [1.0]
    assert score(funcs, weights, ["p"], ["abcdefgh"]) == {"brevity": [1.0], "total": [3.0]}


def test_dotted_path_errors(custom_module):
    with pytest.raises(ValueError, match="cannot import reward 'no_such_pkg.mod:f'"):
        get("no_such_pkg.mod:f")
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        get(f"{custom_module}:missing")
    with pytest.raises(ValueError, match=r"is not a function \(it is of type int\)"):
        get(f"{custom_module}:NOT_A_FUNCTION")


def test_register_new_reward_and_name_clash(monkeypatch):
    from alignpipe.rewards import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register("always_one")
    def always_one_reward(prompts, completions, **kwargs):
        return [1.0] * len(completions)

    assert "always_one" in names()
    funcs, _ = build([spec("always_one")])
    assert funcs[0].__name__ == "always_one" and funcs[0](["p"], ["x", "y"]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="reward name 'exact_match' is already taken"):
        register("exact_match")(always_one_reward)
    with pytest.raises(ValueError, match="already taken"):
        register("reward_model")(always_one_reward)
