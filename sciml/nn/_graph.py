"""Graph networks on small, fully connected particle systems, and Hamiltonian vector fields."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ._mlp import MLP

__all__ = ["HamiltonianGraphNetwork", "symplectic_gradient"]

#: Activations whose second derivatives are not zero almost everywhere; the Hamiltonian's
#: vector field is a first derivative and its training gradient (and MAML's) differentiates it.
SMOOTH_ACTIVATIONS = ("tanh", "softplus", "silu", "gelu", "elu", "sigmoid")


class HamiltonianGraphNetwork(nn.Module):
    r"""A scalar energy $H_\theta(x)$ of a particle system, from dense message passing.

    Node $i$ carries $x_i = (q_i, p_i) \in \mathbb{R}^{2D}$; every ordered pair $i \neq j$ of real
    nodes is an edge. With $r_{ij} = q_i - q_j$ and $\rho_{ij} = \sqrt{|r_{ij}|^2 + 10^{-6}}$
    (smooth at coincident particles):

    $$ m_{ij} = \phi_e(x_i, x_j, r_{ij}, \rho_{ij}),\quad
       e_i = \phi_v\Big(x_i, \sum_{j \neq i} m_{ij}\Big),\quad H = \sum_i e_i, $$

    with MLPs $\phi_e$ (edge) and $\phi_v$ (node, scalar output); sums run over real nodes only, so
    padded nodes change nothing and the energy is invariant to permutations of the particles.
    Everything is dense ``(B, N, N, F)`` tensors, so it is differentiable to any order (as MAML on
    a Hamiltonian needs: third derivatives of the activations).

    Args:
        node_dim: $2D$, features per node.
        hidden_dims: hidden widths of both MLPs.
        message_dim: width of $m_{ij}$.
        activation: a smooth activation (``"softplus"``, ``"tanh"``, ``"silu"``, ...).

    Shapes:
        ``forward(x (..., N, 2D), node_mask (..., N) or None) -> (...)``.
    """

    def __init__(
        self,
        node_dim: int,
        hidden_dims: Sequence[int] = (64, 64),
        message_dim: int = 32,
        activation: str = "softplus",
    ) -> None:
        super().__init__()
        if node_dim <= 0 or node_dim % 2:
            raise ValueError(f"node_dim must be a positive even number (q and p), got {node_dim}")
        if activation not in SMOOTH_ACTIVATIONS:
            raise ValueError(
                f"activation {activation!r} is not smooth enough for a Hamiltonian network "
                f"(its vector field is a derivative); choose one of {SMOOTH_ACTIVATIONS}"
            )
        self.node_dim = node_dim
        space = node_dim // 2
        self.edge_mlp = MLP(
            2 * node_dim + space + 1, message_dim, hidden_dims, activation_name=activation
        )
        self.node_mlp = MLP(node_dim + message_dim, 1, hidden_dims, activation_name=activation)

    def readout_parameter_names(self) -> list[str]:
        """Names of the readout (the node MLP's last linear layer), as ANIL adapts them."""
        index = max(i for i, layer in enumerate(self.node_mlp) if isinstance(layer, nn.Linear))
        return [f"node_mlp.{index}.{name}" for name, _ in self.node_mlp[index].named_parameters()]

    def hidden_layer_names(self) -> dict[str, str]:
        """Hidden activation modules by short name: ``{"edge1": "edge_mlp.1", ..., "node1":
        "node_mlp.1", ...}``; their outputs are ``(..., N, N, width)`` (edges, including the
        diagonal and padded pairs) and ``(..., N, width)`` (nodes)."""
        names = {}
        for prefix, mlp in (("edge", self.edge_mlp), ("node", self.node_mlp)):
            hidden = [i for i, layer in enumerate(mlp) if not isinstance(layer, nn.Linear)][:-1]
            for depth, index in enumerate(hidden, start=1):
                names[f"{prefix}{depth}"] = f"{prefix}_mlp.{index}"
        return names

    @staticmethod
    def edge_weights(node_mask: torch.Tensor) -> torch.Tensor:
        """The graph's edges: 1 for each ordered pair $i \\neq j$ of real nodes, else 0;
        ``(..., N) -> (..., N, N)``."""
        n = node_mask.shape[-1]
        off_diagonal = 1.0 - torch.eye(n, dtype=node_mask.dtype, device=node_mask.device)
        return node_mask.unsqueeze(-1) * node_mask.unsqueeze(-2) * off_diagonal

    def forward(self, x: torch.Tensor, node_mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.node_dim:
            raise ValueError(f"expected {self.node_dim} features per node, got {x.shape[-1]}")
        n = x.shape[-2]
        mask = (
            torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device)
            if node_mask is None
            else node_mask.to(x.dtype).expand(x.shape[:-1])
        )
        q = x[..., : self.node_dim // 2]
        receiver = x.unsqueeze(-2).expand(*x.shape[:-2], n, n, self.node_dim)
        sender = x.unsqueeze(-3).expand(*x.shape[:-2], n, n, self.node_dim)
        offset = q.unsqueeze(-2) - q.unsqueeze(-3)  # (..., N, N, D): q_i - q_j
        distance = torch.sqrt((offset**2).sum(-1, keepdim=True) + 1e-6)
        messages = self.edge_mlp(torch.cat([receiver, sender, offset, distance], dim=-1))
        edge_mask = self.edge_weights(mask)  # (..., N, N)
        aggregated = (messages * edge_mask.unsqueeze(-1)).sum(-2)  # sum over senders j
        node_energy = self.node_mlp(torch.cat([x, aggregated], dim=-1)).squeeze(-1)
        return (node_energy * mask).sum(-1)


def symplectic_gradient(
    energy: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    feature_mask: torch.Tensor | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    r"""Hamilton's equations $\dot q = \partial H/\partial p$, $\dot p = -\partial H/\partial q$.

    Node features are $(q_i, p_i)$ halves of the last axis, so per node the result is
    $J\nabla_{x_i} H$ with $J = \begin{pmatrix} 0 & I \\ -I & 0 \end{pmatrix}$. With a
    ``feature_mask`` (1 for real components, 0 for padding) the field is restricted to the real
    components: it is the Hamiltonian flow of $H$ on the slice where the padding stays zero.

    Args:
        energy: ``x -> H`` with ``H`` of shape ``x.shape[:-2]`` (one energy per graph), or any
            shape whose sum is the total energy.
        x: states ``(..., N, 2D)``; a leaf or not, gradients are taken w.r.t. it.
        feature_mask: ``(..., N, 2D)``, broadcastable.
        create_graph: keep the graph of the derivative (needed to train through it).

    Returns:
        ``(..., N, 2D)`` time derivatives.
    """
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(x).sum(), x, create_graph=create_graph)
    dq, dp = grad.chunk(2, dim=-1)
    field = torch.cat([dp, -dq], dim=-1)
    return field if feature_mask is None else field * feature_mask
