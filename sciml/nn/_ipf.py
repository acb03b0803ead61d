r"""Iterative proportional fitting (IPF) for two-marginal Schrödinger bridges with neural drifts.

For a general reference drift the bridge between two empirical marginals has no closed form: IPF
alternates forward and backward half-bridges, each a drift network regressed on Euler–Maruyama
paths simulated with the other (:func:`sciml.solvers.simulate_euler_maruyama`).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._random import isolated_seed
from ..solvers import simulate_euler_maruyama
from ._mlp import MLP

__all__ = ["IPFBridge", "ipf_bridge"]


class _BridgeDrift(nn.Module):
    r"""$b(x, t) = \pm f_{\text{ref}}(x) + \text{MLP}([x, t/\Delta])$, the MLP's last layer at zero,
    so an untrained forward (backward) drift is the reference's forward (time-reversed) drift
    without its score term. The MLP runs in float32 (the paths stay float64): it is fitted to
    noisy increments, so single precision loses nothing and halves the cost."""

    def __init__(self, dim: int, gap: float, hidden_dims: tuple[int, ...], sign: float) -> None:
        super().__init__()
        self.net = MLP(dim + 1, dim, hidden_dims, activation_name="silu")
        last = self.net[-2]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.gap = gap
        self.sign = sign

    def forward(self, x: torch.Tensor, t: torch.Tensor, reference) -> torch.Tensor:
        base = reference(x) if reference is not None else torch.zeros_like(x)
        return self.sign * base + self.correction(x, t)

    def correction(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        features = torch.cat([x, t / self.gap], dim=-1).float()
        return self.net(features).to(x.dtype)


@dataclass
class IPFBridge:
    """A two-marginal bridge solved by IPF: its drift networks and last simulated paths.

    Attributes:
        forward_drift, backward_drift: the fitted networks (reference added inside).
        forward_paths: ``(n0, N + 1, d)`` simulated from the left marginal.
        backward_paths: ``(n1, N + 1, d)`` simulated from the right marginal.
        times: ``(N + 1,)`` grid relative to the interval start.
    """

    forward_drift: _BridgeDrift
    backward_drift: _BridgeDrift
    forward_paths: torch.Tensor
    backward_paths: torch.Tensor
    times: torch.Tensor

    def simulate(
        self, start: torch.Tensor, reference, sigma, *, generator=None, backward: bool = False
    ) -> torch.Tensor:
        """Paths from ``start`` at the left end (or the right end with ``backward=True``)."""
        net = self.backward_drift if backward else self.forward_drift

        def drift(x, t):
            return net(x, torch.full_like(x[:, :1], t), reference)

        return simulate_euler_maruyama(
            drift, start.double(), self.times, sigma, backward=backward, generator=generator
        )

    def state_dict(self) -> dict[str, Any]:
        """The networks' weights, their sizes and the paths, as tensors and plain data (for
        checkpoints read with ``weights_only=True``)."""
        linears = [m for m in self.forward_drift.net.modules() if isinstance(m, nn.Linear)]
        return {
            "gap": self.forward_drift.gap,
            "hidden_dims": [m.out_features for m in linears[:-1]],
            "forward_drift": self.forward_drift.state_dict(),
            "backward_drift": self.backward_drift.state_dict(),
            "forward_paths": self.forward_paths,
            "backward_paths": self.backward_paths,
            "times": self.times,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> IPFBridge:
        """The bridge :meth:`state_dict` describes."""
        dim, device = state["forward_paths"].shape[-1], state["times"].device
        nets = []
        for name, sign in (("forward_drift", 1.0), ("backward_drift", -1.0)):
            net = _BridgeDrift(dim, state["gap"], tuple(state["hidden_dims"]), sign=sign)
            net.load_state_dict(state[name])
            nets.append(net.to(device))
        return cls(*nets, state["forward_paths"], state["backward_paths"], state["times"])


def _regress_drift(
    net: _BridgeDrift,
    reference,
    x: torch.Tensor,
    t: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator | None,
) -> None:
    """Adam on the mean squared error between ``net(x, t)`` and Euler increments (warm start)."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    with torch.no_grad():
        base = reference(x) if reference is not None else torch.zeros_like(x)
    for _ in range(steps):
        index = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator)
        prediction = net.sign * base[index] + net.correction(x[index], t[index])
        loss = (prediction - target[index]).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def ipf_bridge(
    x0: torch.Tensor,
    x1: torch.Tensor,
    gap: float,
    reference,
    sigma: float | torch.Tensor,
    *,
    n_steps: int,
    iterations: int = 5,
    hidden_dims: tuple[int, ...] = (64, 64),
    fit_steps: int = 200,
    lr: float = 1e-3,
    batch_size: int = 1024,
    warm_start: IPFBridge | None = None,
    generator: torch.Generator | None = None,
) -> IPFBridge:
    r"""Two-marginal Schrödinger bridge over $[0, \Delta]$ by iterative proportional fitting.

    Starting from paths of the reference SDE $dX = f(X)dt + \sigma dW$ out of ``x0``, alternate:
    regress the backward drift on the reversed increments $(X_j - X_{j+1})/h$ of the forward
    paths, simulate backward from ``x1``; regress the forward drift on $(Y_{j+1} - Y_j)/h$ of
    those, simulate forward from ``x0``. Each half-step is the KL projection onto path measures
    with one fixed end marginal (Vargas et al. 2021; De Bortoli et al. 2021), with the drifts
    estimated by regression of Euler increments.

    Args:
        x0, x1: marginal samples ``(n0, d)``, ``(n1, d)``.
        gap: $\Delta$.
        reference: ``nn.Module``/callable drift ``(n, d) -> (n, d)``, or ``None`` (Brownian).
        sigma: scalar or diagonal ``(d,)`` diffusion.
        n_steps: Euler steps $N$ over the gap.
        iterations: IPF iterations (each fits one backward and one forward drift).
        hidden_dims, fit_steps, lr, batch_size: drift networks and their Adam fits.
        warm_start: a previous bridge over the same gap whose networks are copied as the
            starting point of the regressions (the IPF itself restarts from the reference).
        generator: draws the Brownian increments, the minibatches and (without ``warm_start``)
            the networks' initial weights; ``None`` uses torch's global random state.

    Returns:
        :class:`IPFBridge`.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    dim = x0.shape[1]
    times = torch.linspace(0.0, gap, n_steps + 1, dtype=torch.float64, device=x0.device)
    h = gap / n_steps
    x0, x1 = x0.double(), x1.double()
    if warm_start is not None:
        forward_net = copy.deepcopy(warm_start.forward_drift)
        backward_net = copy.deepcopy(warm_start.backward_drift)
    else:
        # the initial weights come from ``generator`` too: a seeded fit is reproducible whatever
        # the global random state
        seed = None if generator is None else int(torch.randint(2**62, (), generator=generator))
        with isolated_seed(seed) if seed is not None else contextlib.nullcontext():
            forward_net = _BridgeDrift(dim, gap, tuple(hidden_dims), sign=1.0)
            backward_net = _BridgeDrift(dim, gap, tuple(hidden_dims), sign=-1.0)
        forward_net, backward_net = forward_net.to(x0.device), backward_net.to(x0.device)
    bridge = IPFBridge(forward_net, backward_net, x0[:, None], x1[:, None], times)
    # IPF starts from the reference process itself, never from a warm-started drift: the first
    # path measure defines the reference of the bridge (starting from an old bridge's drift
    # would count the old correction twice). Warm starts only initialise the regressions.
    forward_paths = simulate_euler_maruyama(
        (lambda x, t: reference(x)) if reference is not None else (lambda x, t: 0.0 * x),
        x0, times, sigma, generator=generator,
    )  # fmt: skip
    fit = {"steps": fit_steps, "lr": lr, "batch_size": batch_size, "generator": generator}
    for _ in range(iterations):
        later = forward_paths[:, 1:].reshape(-1, dim)
        later_t = times[1:].repeat(len(x0))[:, None]
        increments = (forward_paths[:, :-1] - forward_paths[:, 1:]).reshape(-1, dim) / h
        _regress_drift(backward_net, reference, later, later_t, increments, **fit)
        backward_paths = bridge.simulate(x1, reference, sigma, generator=generator, backward=True)
        earlier = backward_paths[:, :-1].reshape(-1, dim)
        earlier_t = times[:-1].repeat(len(x1))[:, None]
        increments = (backward_paths[:, 1:] - backward_paths[:, :-1]).reshape(-1, dim) / h
        _regress_drift(forward_net, reference, earlier, earlier_t, increments, **fit)
        forward_paths = bridge.simulate(x0, reference, sigma, generator=generator)
    bridge.forward_paths, bridge.backward_paths = forward_paths, backward_paths
    return bridge
