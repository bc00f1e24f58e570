"""Selective state-space layer (Mamba-2 style), in pure PyTorch, with a recurrent state for generation.

Per head h (P channels each) and state size N, with input-dependent step dt_t, B_t, C_t (selective):

    h_t = exp(dt_t * A_h) * h_{t-1} + dt_t * x_t B_t^T        (P, N)
    y_t = h_t C_t + D_h * x_t

`ssd_scan` computes this for a whole sequence in chunks of `chunk` steps (the state-space duality
algorithm of Dao & Gu 2024): inside a chunk the recurrence is a masked, decaying attention-like
matmul; across chunks only the (P, N) states are carried. Every exponent is a sum of non-positive
terms, so nothing overflows. `naive_scan` is the step-by-step recurrence it is tested against, and
`Mamba.step` advances one token from a `SSMState` (conv window + h), so generation needs no KV cache.
An optimised kernel (mamba-ssm's on GPU) could replace `ssd_scan` behind the same call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kiln.config import require
from kiln.models.config import SSMConfig


def _segsum(x: torch.Tensor) -> torch.Tensor:
    """x (..., L) -> (..., L, L) with [i, j] = sum_{j < k <= i} x_k for j <= i, -inf above the diagonal.

    Summed along each column (Mamba-2's stable form), not as a difference of two running sums: across
    chunks those reach ~1e5, and their difference would keep only a few digits."""
    L = x.shape[-1]
    below = torch.ones(L, L, dtype=torch.bool, device=x.device).tril(-1)  # k > j
    out = x[..., :, None].expand(*x.shape, L).masked_fill(~below, 0).cumsum(dim=-2)
    keep = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
    return out.masked_fill(~keep, float("-inf"))


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk: int,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked scan. x (b, T, H, P), dt (b, T, H), A (H,), B and C (b, T, N); h0 (b, H, P, N).
    Returns y (b, T, H, P) (without the D skip) and the final state (b, H, P, N)."""
    b, T, H, P = x.shape
    N = B.shape[-1]
    pad = (-T) % chunk
    if pad:  # causal: padding at the end changes nothing before it
        x, dt = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    c = x.shape[1] // chunk
    xd = (x * dt[..., None]).view(b, c, chunk, H, P)  # discretised input dt * x
    a = (dt * A).view(b, c, chunk, H).permute(0, 3, 1, 2)  # (b, H, c, L) log decays, <= 0
    B, C = B.view(b, c, chunk, N), C.view(b, c, chunk, N)
    a_cum = a.cumsum(dim=-1)
    # 1. within each chunk: y_l = sum_{s <= l} (C_l . B_s) exp(a_{s+1..l}) xd_s
    decay = torch.exp(_segsum(a))  # (b, H, c, L, L)
    scores = torch.einsum("bcln,bcsn->bcls", C, B)  # (b, c, L, L)
    y = torch.einsum("bcls,bhcls,bcshp->bclhp", scores, decay, xd)
    # 2. each chunk's final state from its own inputs
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, H, c, L)
    states = torch.einsum("bcln,bhcl,bclhp->bchpn", B, to_end, xd)  # (b, c, H, P, N)
    # 3. carry states across chunks: state entering chunk i
    h0 = torch.zeros(b, H, P, N, dtype=x.dtype, device=x.device) if h0 is None else h0
    states = torch.cat([h0[:, None], states], dim=1)  # (b, c+1, H, P, N)
    chunk_decay = torch.exp(_segsum(F.pad(a_cum[..., -1], (1, 0))))  # (b, H, c+1, c+1)
    carried = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
    entering, final = carried[:, :-1], carried[:, -1]
    # 4. what the entering state contributes inside each chunk
    y = y + torch.einsum("bcln,bchpn,bhcl->bclhp", C, entering, torch.exp(a_cum))
    return y.reshape(b, c * chunk, H, P)[:, :T], final


def naive_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h0: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence one step at a time (the reference `ssd_scan` is tested against)."""
    b, T, H, P = x.shape
    h = torch.zeros(b, H, P, B.shape[-1], dtype=x.dtype, device=x.device) if h0 is None else h0
    ys = []
    for t in range(T):
        h = (
            torch.exp(dt[:, t] * A)[..., None, None] * h
            + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, None, None, :]
        )
        ys.append(torch.einsum("bhpn,bn->bhp", h, C[:, t]))
    return torch.stack(ys, dim=1), h


@dataclass
class SSMState:
    """What one SSM layer carries between generated tokens."""

    conv: torch.Tensor  # (b, conv_channels, conv_width - 1): the last inputs to the convolution
    h: torch.Tensor  # (b, H, P, N)


class Mamba(nn.Module):
    """in_proj -> causal depthwise conv over (x, B, C) -> SiLU -> selective scan -> gated RMSNorm -> out_proj."""

    def __init__(self, dim: int, cfg: SSMConfig, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.cfg = cfg
        self.inner = cfg.expand * dim
        require(self.inner % cfg.head_dim == 0, f"model.ssm.head_dim={cfg.head_dim} must divide expand * dim")
        self.num_heads = self.inner // cfg.head_dim
        N = cfg.state_dim
        self.conv_channels = self.inner + 2 * N
        self.in_proj = nn.Linear(dim, 2 * self.inner + 2 * N + self.num_heads, bias=False)  # z, x, B, C, dt
        self.conv = nn.Conv1d(
            self.conv_channels,
            self.conv_channels,
            cfg.conv_width,
            groups=self.conv_channels,
            padding=cfg.conv_width - 1,
        )
        self.A_log = nn.Parameter(torch.empty(self.num_heads))
        self.dt_bias = nn.Parameter(torch.empty(self.num_heads))
        self.D = nn.Parameter(torch.empty(self.num_heads))
        self.norm_weight = nn.Parameter(torch.empty(self.inner))
        self.norm_eps = norm_eps
        self.out_proj = nn.Linear(self.inner, dim, bias=False)

    @torch.no_grad()
    def init_weights(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.in_proj.weight, std=std)
        nn.init.normal_(self.out_proj.weight, std=out_std)
        nn.init.kaiming_uniform_(self.conv.weight, a=math.sqrt(5))
        assert self.conv.bias is not None
        nn.init.zeros_(self.conv.bias)
        H = self.num_heads
        self.A_log.copy_(torch.log(torch.linspace(1.0, 16.0, H)))  # decay rates spread over heads
        dt = torch.exp(torch.linspace(math.log(1e-3), math.log(1e-1), H))  # Mamba's dt range
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        nn.init.ones_(self.D)
        nn.init.ones_(self.norm_weight)

    def _split(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return u.split([self.inner, self.conv_channels, self.num_heads], dim=-1)

    def _scan_inputs(self, xbc: torch.Tensor, dt: torch.Tensor):
        x, B, C = xbc.split([self.inner, self.cfg.state_dim, self.cfg.state_dim], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias)
        return (
            x.float().unflatten(-1, (self.num_heads, self.cfg.head_dim)),
            dt,
            -torch.exp(self.A_log.float()),
            B.float(),
            C.float(),
        )

    def _out(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = (y + self.D.float()[:, None] * x).flatten(-2)
        y = F.rms_norm(y * F.silu(z.float()), (self.inner,), self.norm_weight.float(), self.norm_eps)
        return self.out_proj(y.to(z.dtype))

    def forward(self, u: torch.Tensor, state: SSMState | None = None) -> torch.Tensor:
        """u (b, T, C) -> (b, T, C). With `state`, continue from it (and update it) token by token."""
        if state is not None:
            return torch.cat([self.step(u[:, t], state) for t in range(u.shape[1])], dim=1)
        T = u.shape[1]
        z, xbc, dt = self._split(self.in_proj(u))
        xbc = F.silu(self.conv(xbc.transpose(1, 2))[..., :T].transpose(1, 2))
        x, dt, A, B, C = self._scan_inputs(xbc, dt)
        y, _ = ssd_scan(x, dt, A, B, C, self.cfg.chunk)
        return self._out(y, x, z)

    def new_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> SSMState:
        return SSMState(
            torch.zeros(batch, self.conv_channels, self.cfg.conv_width - 1, device=device, dtype=dtype),
            torch.zeros(batch, self.num_heads, self.cfg.head_dim, self.cfg.state_dim, device=device),
        )

    def step(self, u: torch.Tensor, state: SSMState) -> torch.Tensor:
        """One token: u (b, C) -> (b, 1, C); the recurrence, with the conv window kept in `state`."""
        z, xbc, dt = self._split(self.in_proj(u))
        window = torch.cat([state.conv, xbc[..., None].to(state.conv.dtype)], dim=-1)  # (b, ch, width)
        state.conv = window[..., 1:]
        bias = self.conv.bias
        assert bias is not None
        xbc = F.silu((window * self.conv.weight[:, 0].to(window.dtype)).sum(-1) + bias.to(window.dtype))
        x, dt, A, B, C = self._scan_inputs(xbc, dt)
        state.h = torch.exp(dt * A)[..., None, None] * state.h + (dt[..., None] * x)[..., None] * B[:, None, None, :]
        y = torch.einsum("bhpn,bn->bhp", state.h, C)
        return self._out(y, x, z)[:, None]
