r"""Transformer blocks for multimodal operator learning (PROSE).

All blocks are post-LayerNorm, batch-first, with GELU feed-forward layers: a sublayer $S$ acts as
$x \leftarrow \mathrm{LN}(x + S(x))$. Widths, heads and depths are arguments.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "DataEmbedding",
    "ModalityFusion",
    "OperatorDecoder",
    "SymbolDecoder",
    "SymbolEmbedding",
    "TransformerEncoder",
    "sinusoidal_positions",
]


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    r"""``(length, width)`` table $P_{k,2i} = \sin(k/10^{4(2i)/w})$, $P_{k,2i+1} = \cos(\cdot)$."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(1e4) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


def _layer_kwargs(width: int, heads: int, ffn: int) -> dict:
    if width % heads:
        raise ValueError(f"width={width} must be divisible by heads={heads}")
    return dict(
        d_model=width,
        nhead=heads,
        dim_feedforward=ffn,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=False,
    )


class TransformerEncoder(nn.Module):
    """Self-attention encoder: ``(B, N, width) -> (B, N, width)``.

    Args:
        width, heads, layers, ffn: model width, attention heads, depth, feed-forward width.

    ``padding_mask (B, N)`` is ``True`` at padded positions, which no token attends to.
    """

    def __init__(self, width: int, heads: int, layers: int, ffn: int) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(**_layer_kwargs(width, heads, ffn))
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.layers(x, src_key_padding_mask=padding_mask)


class DataEmbedding(nn.Module):
    """Each observation ``(t_i, u(t_i))`` -> one token: ``(B, N, 1 + d) -> (B, N, width)``.

    No positional encoding: the time is part of the token.
    """

    def __init__(self, in_dim: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SymbolEmbedding(nn.Module):
    r"""Token ids ``(B, L)`` -> $\sqrt{w}\,E[\mathrm{id}] + P$ of shape ``(B, L, width)``."""

    def __init__(self, vocab_size: int, width: int, max_len: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        self.register_buffer("positions", sinusoidal_positions(max_len, width), persistent=False)
        self.scale = math.sqrt(width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > len(self.positions):
            raise ValueError(
                f"sequence length {ids.shape[1]} exceeds max_len={len(self.positions)}"
            )
        return self.tokens(ids) * self.scale + self.positions[: ids.shape[1]]


class ModalityFusion(nn.Module):
    """Joint self-attention over concatenated modalities, each tagged by a learned type embedding.

    ``forward([x_0 (B, N_0, w), x_1 (B, N_1, w), ...], [mask_0, ...])`` returns the fused features
    split back per modality, same shapes as the inputs. Masks are ``True`` at padding (or ``None``).
    """

    def __init__(self, width: int, heads: int, layers: int, ffn: int, modalities: int = 2) -> None:
        super().__init__()
        self.types = nn.Embedding(modalities, width)
        self.encoder = TransformerEncoder(width, heads, layers, ffn)

    def forward(
        self, features: list[torch.Tensor], masks: list[torch.Tensor | None]
    ) -> list[torch.Tensor]:
        tagged = [x + self.types.weight[k] for k, x in enumerate(features)]
        masks = [
            torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device) if m is None else m
            for x, m in zip(features, masks, strict=True)
        ]
        fused = self.encoder(torch.cat(tagged, 1), torch.cat(masks, 1))
        return list(fused.split([x.shape[1] for x in features], 1))


class _CrossAttentionLayer(nn.Module):
    """Queries attend to a memory, then a feed-forward layer; no query-query interaction."""

    def __init__(self, width: int, heads: int, ffn: int) -> None:
        super().__init__()
        _layer_kwargs(width, heads, ffn)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, ffn), nn.GELU(), nn.Linear(ffn, width))

    def forward(self, q: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None):
        attended, _ = self.attention(q, memory, memory, key_padding_mask=mask, need_weights=False)
        q = self.norm1(q + attended)
        return self.norm2(q + self.ffn(q))


class OperatorDecoder(nn.Module):
    r"""Query-time operator decoder: $\hat u(\tau) = W\,h_L(\tau)$ with
    $h_0 = \mathrm{MLP}(\tau)$ and $h_{l+1} = \mathrm{CrossAttn}(h_l, \text{memory})$.

    Queries never attend to each other, so each output depends on its own query time and the memory
    only (a DeepONet-like operator that can be evaluated at any times, in any number).

    Shapes:
        ``forward(t (B, Q), memory (B, N, width), memory_mask (B, N) | None) -> (B, Q, out_dim)``.
    """

    def __init__(self, width: int, heads: int, layers: int, ffn: int, out_dim: int) -> None:
        super().__init__()
        self.query = nn.Sequential(nn.Linear(1, width), nn.GELU(), nn.Linear(width, width))
        self.layers = nn.ModuleList(_CrossAttentionLayer(width, heads, ffn) for _ in range(layers))
        self.out = nn.Linear(width, out_dim)

    def forward(
        self, t: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.query(t[..., None])
        for layer in self.layers:
            h = layer(h, memory, memory_mask)
        return self.out(h)


class SymbolDecoder(nn.Module):
    """Causal token decoder cross-attending to a memory, with a linear output projection.

    Shapes:
        ``forward(ids (B, L), memory (B, N, width), memory_mask) -> logits (B, L, vocab)``; the
        logits at position ``k`` depend on ``ids[:, :k+1]`` only.
    """

    def __init__(
        self, vocab_size: int, width: int, heads: int, layers: int, ffn: int, max_len: int
    ) -> None:
        super().__init__()
        self.embedding = SymbolEmbedding(vocab_size, width, max_len)
        layer = nn.TransformerDecoderLayer(**_layer_kwargs(width, heads, ffn))
        self.layers = nn.TransformerDecoder(layer, layers)
        self.out = nn.Linear(width, vocab_size)
        self.max_len = max_len

    def forward(
        self, ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        length = ids.shape[1]
        causal = torch.triu(
            torch.full((length, length), float("-inf"), device=ids.device), diagonal=1
        )
        h = self.layers(
            self.embedding(ids),
            memory,
            tgt_mask=causal,
            tgt_is_causal=True,
            memory_key_padding_mask=memory_mask,
        )
        return self.out(h)

    @torch.no_grad()
    def greedy(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None,
        *,
        bos: int,
        eos: int,
        pad: int,
        max_len: int | None = None,
    ) -> torch.Tensor:
        """Most-probable-token decoding: ``(B, L)`` ids from ``bos``; after ``eos``, ``pad``."""
        max_len = min(max_len or self.max_len, self.max_len)
        ids = torch.full((memory.shape[0], 1), bos, dtype=torch.long, device=memory.device)
        finished = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
        while ids.shape[1] < max_len and not finished.all():
            following = self(ids, memory, memory_mask)[:, -1].argmax(-1)
            following = torch.where(finished, torch.full_like(following, pad), following)
            ids = torch.cat([ids, following[:, None]], 1)
            finished |= following == eos
        return ids
