"""Mixture-of-experts MLP: a router picks top-k SwiGLU experts per token, without dropping tokens.

Every token goes to its k best experts (no capacity limit, so nothing is dropped and the output does
not depend on the batch's routing); tokens are sorted by expert and each expert runs one matmul over
its tokens. Two auxiliary losses keep routing healthy: the Switch Transformer load-balancing loss
E * sum_e f_e * p_e (f_e: share of assignments to expert e, p_e: its mean router probability; 1.0 when
balanced) and the ST-MoE router z-loss mean(logsumexp(logits)^2). The layer keeps its last
auxiliary loss and expert load for the objective and the metrics to read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kiln.models.config import MoEConfig


class MoE(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, cfg: MoEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        E, H = cfg.num_experts, hidden_dim
        self.router = nn.Linear(dim, E, bias=False)
        self.w_gate_up = nn.Parameter(torch.empty(E, dim, 2 * H))
        self.w_down = nn.Parameter(torch.empty(E, H, dim))
        self.aux_loss: torch.Tensor | None = None
        self.load: torch.Tensor | None = None  # (E,) share of assignments per expert, last forward

    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.router.weight, std=std)
        nn.init.normal_(self.w_gate_up, std=std)
        nn.init.normal_(self.w_down, std=out_std)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, C) -> top-k weights (N, k), expert ids (N, k), auxiliary loss (scalar)."""
        E, k = self.cfg.num_experts, self.cfg.top_k
        logits = self.router(x).float()  # routing in fp32
        probs = logits.softmax(dim=-1)
        weights, experts = probs.topk(k, dim=-1)
        if k > 1:  # renormalised over the chosen; top-1 keeps its probability (Switch), or the router
            weights = weights / weights.sum(dim=-1, keepdim=True)  # would get no gradient from the task
        share = torch.bincount(experts.flatten(), minlength=E).float() / experts.numel()
        balance = E * (share * probs.mean(dim=0)).sum()
        z = torch.logsumexp(logits, dim=-1).square().mean()
        self.load = share.detach()
        return weights, experts, self.cfg.aux_loss_coef * balance + self.cfg.z_loss_coef * z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, C)
        weights, experts, self.aux_loss = self.route(x)
        k = self.cfg.top_k
        flat = experts.flatten()  # (N*k,) expert of each assignment
        order = flat.argsort(stable=True)
        token = order // k  # which token each sorted assignment belongs to
        counts = torch.bincount(flat, minlength=self.cfg.num_experts).tolist()
        xs = x[token]
        out = torch.empty(xs.shape[0], shape[-1], dtype=xs.dtype, device=x.device)
        start = 0
        for e, n in enumerate(counts):
            if n:
                gate, up = (xs[start : start + n] @ self.w_gate_up[e].to(xs.dtype)).chunk(2, dim=-1)
                out[start : start + n] = (F.silu(gate) * up) @ self.w_down[e].to(xs.dtype)
            start += n
        out = out * weights.flatten()[order, None].to(out.dtype)
        y = torch.zeros_like(x, dtype=out.dtype).index_add_(0, token, out)
        return y.reshape(shape)
