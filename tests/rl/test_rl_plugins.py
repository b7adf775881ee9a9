"""Each advantage estimator, policy loss, aggregation and KL estimator against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from alignpipe import rl
from alignpipe.rl import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS, LOSSES, AdvantageInput, LossInput
from alignpipe.rl.critic import value_loss


def _seq_input(rewards, k, T=2):
    r = torch.tensor(rewards, dtype=torch.float)
    tr = torch.zeros(len(rewards), T)
    tr[:, -1] = r
    return AdvantageInput(tr, torch.ones(len(rewards), T), k)


def test_grpo_group_mean_and_std():
    adv, ret = ADVANTAGES.get("grpo")(_seq_input([1.0, 3.0, 5.0, 5.0], k=2))
    s = 1 / math.sqrt(2)  # (r - 2) / std([1, 3]) with std = sqrt(2); second group has std 0
    assert torch.allclose(adv[:, 0], torch.tensor([-s, s, 0.0, 0.0]), atol=1e-5) and ret is None
    assert torch.equal(adv[:, 0], adv[:, 1])  # one advantage for every token


def test_dr_grpo_has_no_std_scaling():
    adv, _ = ADVANTAGES.get("dr_grpo")(_seq_input([1.0, 3.0], k=2))
    assert torch.allclose(adv[:, 0], torch.tensor([-1.0, 1.0]))


def test_rloo_leave_one_out_baseline():
    adv, _ = ADVANTAGES.get("rloo")(_seq_input([1.0, 2.0, 6.0], k=3))
    # baselines: (2+6)/2 = 4, (1+6)/2 = 3.5, (1+2)/2 = 1.5
    assert torch.allclose(adv[:, 0], torch.tensor([-3.0, -1.5, 4.5]))


def test_reinforce_pp_returns_with_token_kl_then_batch_whitening():
    tr = torch.tensor([[0.1, 1.0], [0.0, 0.0]])  # 0.1: a per-token (KL) reward; 1.0: the sequence reward
    adv, _ = ADVANTAGES.get("reinforce_pp")(AdvantageInput(tr, torch.ones(2, 2), 2))
    returns = torch.tensor([[1.1, 1.0], [0.0, 0.0]])
    std = math.sqrt(((returns - 0.525) ** 2).sum().item() / 3)  # mean 0.525, unbiased std over 4 tokens
    assert torch.allclose(adv, (returns - 0.525) / std, atol=1e-4)


def test_gae_on_a_three_token_episode():
    tr = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    adv, ret = ADVANTAGES.get("gae")(AdvantageInput(tr, torch.ones(1, 3), 1, values, gamma=1.0, lam=0.9))
    # deltas: 0.6-0.5 = 0.1, 0.7-0.6 = 0.1, 1-0.7 = 0.3; A2 = 0.3, A1 = 0.1+0.9*0.3, A0 = 0.1+0.9*A1
    assert torch.allclose(adv, torch.tensor([[0.433, 0.37, 0.3]]), atol=1e-5)
    assert torch.allclose(ret, torch.tensor([[0.933, 0.97, 1.0]]), atol=1e-5)


def test_gae_value_after_the_last_token_is_zero_and_padding_is_ignored():
    tr = torch.tensor([[0.0, 2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    values = torch.tensor([[1.0, 1.0, 9.0]])
    adv, _ = ADVANTAGES.get("gae")(AdvantageInput(tr, mask, 1, values, gamma=0.5, lam=1.0))
    # A1 = 2 - 1 = 1; A0 = (0 + 0.5*1 - 1) + 0.5*1 = 0
    assert torch.allclose(adv, torch.tensor([[0.0, 1.0, 0.0]]))


def test_gae_without_values_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a critic"):
        ADVANTAGES.get("gae")(_seq_input([1.0], k=1))


def test_kl_estimators():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert KL_ESTIMATORS.get("k1")(logp, ref).item() == pytest.approx(math.log(2))
    assert KL_ESTIMATORS.get("k2")(logp, ref).item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert KL_ESTIMATORS.get("k3")(logp, ref).item() == pytest.approx(0.5 - 1 + math.log(2))  # r - 1 - log r, r = 0.5
    assert KL_ESTIMATORS.get("k3")(logp, logp).item() == 0.0


def test_aggregations():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert AGGREGATIONS.get("token_mean")(x, m, 3).item() == pytest.approx(2.5)
    assert AGGREGATIONS.get("seq_mean")(x, m, 3).item() == pytest.approx(3.0)
    assert AGGREGATIONS.get("token_sum_norm")(x, m, 3).item() == pytest.approx(10 / 6)


def _loss_input(logp, old, adv=None, scores=None, k=1, **options):
    logp = torch.tensor(logp, requires_grad=True)
    old = torch.tensor(old)
    return LossInput(logp=logp, old_logp=old, advantages=torch.tensor(adv) if adv is not None else torch.zeros_like(old),
                     mask=torch.ones_like(old), scores=torch.tensor(scores if scores is not None else [0.0] * len(old)),
                     group_size=k, options=options)


def test_ppo_clip_value_gradient_and_clip_fraction():
    ratios = [1.5, 0.5, 1.1]
    inp = _loss_input([[math.log(r) for r in ratios]], [[0.0, 0.0, 0.0]], adv=[[1.0, 1.0, -1.0]], clip_eps=0.2)
    loss, m = LOSSES.get("ppo_clip")(inp)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(-0.5, -0.8) = -0.5; token 2: max(1.1, 1.1) = 1.1
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.1) / 3)
    assert m["clip_ratio"] == pytest.approx(1 / 3)
    loss.backward()
    assert inp.logp.grad[0, 0] == 0.0 and inp.logp.grad[0, 1] != 0.0  # the clipped token gets no gradient


def test_ppo_clip_higher_widens_the_upper_side_only():
    inp = _loss_input([[math.log(1.5), math.log(0.5)]], [[0.0, 0.0]], adv=[[1.0, -1.0]], clip_eps=0.2,
                      clip_eps_high=0.6)
    loss, m = LOSSES.get("ppo_clip")(inp)
    # token 0: ratio 1.5 < 1.6, unclipped -1.5; token 1: A<0, ratio 0.5 -> max(0.5, 0.8) = 0.8 (clipped at 1-0.2)
    assert loss.item() == pytest.approx((-1.5 + 0.8) / 2) and m["clip_ratio"] == pytest.approx(0.5)


def test_sft_on_positive_is_nll_of_the_correct_completions():
    inp = _loss_input([[-1.0, -2.0], [-3.0, -4.0]], [[0.0, 0.0], [0.0, 0.0]], scores=[1.0, 0.0])
    loss, m = LOSSES.get("sft_on_positive")(inp)
    assert loss.item() == pytest.approx(1.5) and m["positive_fraction"] == 0.5
    none = _loss_input([[-1.0]], [[0.0]], scores=[0.0])
    assert LOSSES.get("sft_on_positive")(none)[0].item() == 0.0


def test_nft_positive_likelihood_and_implicit_negative():
    inp = _loss_input([[math.log(1.1)], [math.log(0.8)]], [[0.0], [0.0]], scores=[1.0, 0.0], k=2)
    loss, _ = LOSSES.get("nft")(inp)
    # rhat = 0.5; positive: -log 1.1; negative: -log((1 - 0.5*0.8) / 0.5) = -log 1.2
    assert loss.item() == pytest.approx((-math.log(1.1) - math.log(1.2)) / 2, abs=1e-5)
    loss.backward()
    assert inp.logp.grad[0, 0] < 0 < inp.logp.grad[1, 0]  # raise the correct one, lower the wrong one


def test_copg_pairwise_loss_and_gradient():
    inp = _loss_input([[0.5], [-0.5]], [[0.0], [0.0]], scores=[1.0, 0.0], k=2, copg_beta=0.1)
    loss, m = LOSSES.get("copg")(inp)
    # delta = (1 - 0) - 0.1 * (0.5 - (-0.5)) = 0.9; loss = 0.81 / 0.2
    assert loss.item() == pytest.approx(4.05) and m["copg_residual"] == pytest.approx(0.9)
    loss.backward()
    assert inp.logp.grad[:, 0].tolist() == pytest.approx([-0.9, 0.9])


def test_alol_drops_negative_advantage_rows_and_clips_the_importance_weight():
    logp = torch.tensor([[-1.0, -2.0], [-1.0, -1.0], [-0.5, -3.0]], requires_grad=True)
    inp = LossInput(logp=logp, old_logp=torch.tensor([[-1.1, -2.0], [-1.0, -1.0], [-1.0, -3.0]]),
                    advantages=torch.tensor([[1.0, 1.0], [-0.5, -0.5], [2.0, 2.0]]),
                    mask=torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]]), scores=torch.zeros(3), group_size=3,
                    options={"clip_eps": 0.2})
    loss, m = LOSSES.get("alol")(inp)
    # row 0: A = 1, w = e^0.1 (inside [0.8, 1.2]); row 1: A < 0, dropped; row 2: A = 2, w = e^0.5 -> clipped to 1.2.
    # token mean over the 3 kept tokens of -A w log pi: (e^0.1 * 1 + e^0.1 * 2 + 2 * 1.2 * 0.5) / 3
    w0 = math.exp(0.1)
    assert loss.item() == pytest.approx((3 * w0 + 1.2) / 3, abs=1e-6)
    assert m["kept_fraction"] == pytest.approx(2 / 3) and m["importance_weight_clip_ratio"] == 0.5
    assert m["importance_weight_mean"] == pytest.approx((w0 + math.exp(0.5)) / 2, abs=1e-6)
    loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-w0 / 3, -w0 / 3, 0.0, 0.0, -0.8, 0.0], abs=1e-6)
    ref = LossInput(logp=logp.detach().clone(), old_logp=logp.detach(), ref_logp=logp.detach() - 1.0,
                    advantages=torch.ones(3, 2), mask=torch.ones(3, 2), scores=torch.zeros(3), group_size=3,
                    options={"clip_eps": 0.2, "clip_eps_high": 0.5})
    assert LOSSES.get("alol")(ref)[1]["importance_weight_clip_ratio"] == 1.0  # against the reference: w = e^2
    nothing = LossInput(logp=logp.detach().clone().requires_grad_(), old_logp=logp.detach(),
                        advantages=-torch.ones(3, 2), mask=torch.ones(3, 2), scores=torch.zeros(3), group_size=3)
    assert LOSSES.get("alol")(nothing)[0].item() == 0.0


def test_value_loss_clipping():
    v = torch.tensor([[0.5]], requires_grad=True)
    loss, frac = value_loss(v, torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.ones(1, 1), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * 0.64) and frac == 1.0  # clipped value 0.2: (0.2 - 1)^2 > (0.5 - 1)^2
    assert value_loss(v, torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.ones(1, 1), clip=None)[0].item() == \
        pytest.approx(0.125)


def test_a_plugin_is_one_function_and_a_decorator():
    @ADVANTAGES.register("test_raw_reward")
    def raw(inp):
        """The sequence reward itself, no baseline."""
        return inp.broadcast(inp.seq_rewards), None

    assert "test_raw_reward" in rl.describe()["advantage estimator"]
    adv, _ = ADVANTAGES.get("test_raw_reward")(_seq_input([2.0], k=1))
    assert adv.tolist() == [[2.0, 2.0]]
    assert ADVANTAGES.get("alignpipe.rl.advantages:rloo") is ADVANTAGES.get("rloo")
    with pytest.raises(ValueError, match="unknown advantage estimator 'grp0' \\(choose one of: dr_grpo, gae, grpo"):
        ADVANTAGES.get("grp0")
