"""The PPO arithmetic of `detoxkit train rlhf` (training/rlhf.py), on [rollouts, tokens] tensors.

Every tensor is right-padded: `mask` is 1 on a rollout's response tokens and 0 after them.
Nothing here knows about models; tests/test_training_rlhf.py checks each function against
hand computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance over the valid tokens (padding stays 0)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(var + eps) * mask


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The k1 estimate of KL(policy || reference) at each sampled token: log p - log p_ref.
    Unbiased for the sequence KL (its sum over tokens) when the tokens are sampled from the policy."""
    return (logp - ref_logp) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation per token (Schulman et al. 2016):
    delta_t = r_t + gamma V_{t+1} - V_t (V after the last token is 0),
    A_t = delta_t + gamma lam A_{t+1}; returns = A + V. Returns (advantages, returns)."""
    rewards, values = rewards * mask, values * mask  # padding: no reward, no value, A = 0
    n = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(n)):
        next_value = values[:, t + 1] if t + 1 < n else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


@dataclass
class PPOLoss:
    loss: torch.Tensor  # policy loss + vf_coef * value loss (differentiable)
    policy: float
    value: float
    clip_fraction: float  # share of tokens whose ratio left [1 - clip, 1 + clip]
    approx_kl: float  # mean (ratio - 1) - log ratio: how far this update moved from the rollout policy


def ppo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
             values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
             mask: torch.Tensor, clip_range: float, clip_range_value: float,
             vf_coef: float) -> PPOLoss:
    """The clipped surrogate objective and the clipped value loss (PPO, Schulman et al. 2017),
    each a mean over the valid tokens:
    policy = mean max(-A r, -A clip(r, 1 - eps, 1 + eps)), r = exp(logp - old_logp);
    value = 0.5 mean max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2)."""
    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    policy = masked_mean(torch.maximum(unclipped, clipped), mask)
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    value = 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (values_clipped - returns) ** 2),
                              mask)
    with torch.no_grad():
        clip_fraction = masked_mean(((ratio - 1.0).abs() > clip_range).float(), mask)
        approx_kl = masked_mean(ratio - 1.0 - log_ratio, mask)
    return PPOLoss(policy + vf_coef * value, float(policy.detach()), float(value.detach()),
                   float(clip_fraction), float(approx_kl))


class KLController:
    """The KL penalty's coefficient: fixed, or adaptive as Ziegler et al. (2019) set it:
    e = clip(KL / target - 1, -0.2, 0.2); coef *= 1 + e * n / horizon, where KL is the mean
    sequence KL of the step's n rollouts. target None: fixed."""

    def __init__(self, coef: float, target: float | None = None, horizon: float = 10000):
        if target is not None and target <= 0:
            raise ValueError("the KL target must be > 0")
        self.value, self.target, self.horizon = float(coef), target, float(horizon)

    def update(self, mean_sequence_kl: float, n_rollouts: int) -> float:
        if self.target is not None:
            error = min(max(mean_sequence_kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_rollouts / self.horizon
        return self.value
