"""MaskFormer's transformer predictor: DETR decoder on res5 -> class logits and mask logits per query."""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .pixel_decoder import c2_xavier_fill
from .position_encoding import PositionEmbeddingSine

__all__ = ["DecoderLayer", "TransformerDecoder", "MLP", "TransformerPredictor", "PREDICTOR_REGISTRY",
           "register_predictor", "build_transformer_predictor"]


class DecoderLayer(nn.Module):
    """DETR decoder layer, post-norm: self-attention, cross-attention, ReLU FFN; each block is
    residual + dropout followed by LayerNorm. Queries get ``query_pos`` added to the attention
    queries/keys; memory keys get ``pos`` added. Sequences are batch-first."""

    def __init__(self, *, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        *,
        query_pos: torch.Tensor,
        pos: torch.Tensor,
        memory_key_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """tgt, query_pos: [B,Q,D]; memory, pos: [B,HW,D]; memory_key_padding_mask: bool [B,HW]
        (True = padded, ignored as key). Returns [B,Q,D]."""
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, q, tgt, need_weights=False)[0]))
        attn = self.cross_attn(
            tgt + query_pos, memory + pos, memory,
            key_padding_mask=memory_key_padding_mask, need_weights=False,
        )[0]
        tgt = self.norm2(tgt + self.dropout2(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class TransformerDecoder(nn.Module):
    """A stack of DecoderLayer; returns the shared final LayerNorm applied to every layer's
    output (DETR's return_intermediate): [L,B,Q,D]."""

    def __init__(self, *, num_layers: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, *, query_pos, pos, memory_key_padding_mask=None) -> torch.Tensor:
        outs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, query_pos=query_pos, pos=pos, memory_key_padding_mask=memory_key_padding_mask)
            outs.append(self.norm(tgt))
        return torch.stack(outs)


class MLP(nn.Module):
    """Linear layers in_dim -> hidden_dim x (num_layers-1) -> out_dim with ReLU between them."""

    def __init__(self, *, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class TransformerPredictor(nn.Module):
    """MaskFormer's TransformerPredictor without a transformer encoder (ENC_LAYERS 0).

    res5 [B,C,h,w] -> 1x1 conv to hidden_dim -> memory (+ 2-D sine positions). ``num_queries``
    learned query embeddings are the query positions; the decoder targets start at zero. Every
    decoder layer's (normed) output gives class logits (Linear -> K+1, last = "no object") and a
    mask embedding (3-layer MLP -> mask_dim) whose dot product with the per-pixel mask features
    gives the mask logits.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dropout: float = 0.1,
        dim_feedforward: int = 2048,
        dec_layers: int = 6,
        mask_dim: int = 256,
        deep_supervision: bool = True,
    ):
        super().__init__()
        if num_classes <= 0:
            raise ValueError(
                f"TransformerPredictor: num_classes must be positive, got {num_classes} "
                "(MODEL.SEM_SEG_HEAD.NUM_CLASSES = -1 must be resolved from the dataset first)."
            )
        if hidden_dim % 2 != 0 or hidden_dim % nheads != 0:
            raise ValueError(
                f"TransformerPredictor: HIDDEN_DIM ({hidden_dim}) must be even and divisible by NHEADS "
                f"({nheads}); check MODEL.MASK_FORMER.HIDDEN_DIM / NHEADS."
            )
        if dec_layers < 1:
            raise ValueError(f"TransformerPredictor: DEC_LAYERS must be >= 1, got {dec_layers}.")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.num_queries = int(num_queries)
        self.mask_dim = int(mask_dim)
        self.deep_supervision = bool(deep_supervision)

        self.input_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
        c2_xavier_fill(self.input_proj)
        self.pe_layer = PositionEmbeddingSine(num_pos_feats=hidden_dim // 2, normalize=True)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.decoder = TransformerDecoder(
            num_layers=dec_layers, d_model=hidden_dim, nhead=nheads,
            dim_feedforward=dim_feedforward, dropout=dropout,
        )
        # DETR initialises every matrix of the transformer with Xavier-uniform.
        for p in self.decoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(in_dim=hidden_dim, hidden_dim=hidden_dim, out_dim=mask_dim, num_layers=3)

    def decoder_inputs(self, x: torch.Tensor, mask: Optional[torch.Tensor]):
        """The attended map x [B,C,h,w] (padding mask [B,h,w] or None) -> the decoder's inputs:
        tgt and query_pos [B,Q,D] (zeros; the learned query embeddings), memory and pos [B,hw,D]
        (projected features; sine positions), key_mask [B,hw] or None."""
        src = self.input_proj(x)
        pos = self.pe_layer(src, mask).flatten(2).transpose(1, 2)
        memory = src.flatten(2).transpose(1, 2)
        query_pos = self.query_embed.weight[None].expand(x.shape[0], -1, -1)
        key_mask = mask.flatten(1) if mask is not None else None
        return torch.zeros_like(query_pos), memory, query_pos, pos, key_mask

    def forward(
        self,
        x: torch.Tensor,
        mask_features: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
    ) -> dict:
        """x: res5 [B,C,h,w]; mask_features: [B,mask_dim,H,W]; mask: bool padding mask, True =
        padded, [B,h,w] or any [B,h',w'] (resized to h,w by nearest sampling), or None.

        Returns {"pred_logits": [B,Q,K+1], "pred_masks": [B,Q,H,W]} from the last layer, plus
        "aux_outputs": [{"pred_logits", "pred_masks"}] for layers 1..L-1 with deep supervision.
        """
        b, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"TransformerPredictor: input has {c} channels, expected {self.in_channels}.")
        if mask_features.dim() != 4 or mask_features.shape[:2] != (b, self.mask_dim):
            raise ValueError(
                f"TransformerPredictor: mask_features must be [B={b}, mask_dim={self.mask_dim}, H, W], "
                f"got {tuple(mask_features.shape)}."
            )
        mask = padding_mask_at(mask, b, (h, w), "TransformerPredictor")
        tgt, memory, query_pos, pos, key_mask = self.decoder_inputs(x, mask)
        hs = self.decoder(tgt, memory, query_pos=query_pos, pos=pos, memory_key_padding_mask=key_mask)  # [L,B,Q,D]

        if not self.deep_supervision:
            hs = hs[-1:]
        logits = self.class_embed(hs)
        masks = torch.einsum("lbqc,bchw->lbqhw", self.mask_embed(hs), mask_features)
        out = {"pred_logits": logits[-1], "pred_masks": masks[-1]}
        if self.deep_supervision:
            out["aux_outputs"] = [
                {"pred_logits": a, "pred_masks": m} for a, m in zip(logits[:-1], masks[:-1])
            ]
        return out


def padding_mask_at(mask: Optional[torch.Tensor], b: int, hw, who: str) -> Optional[torch.Tensor]:
    """Padding mask bool [B,h,w] (True = padding) resized (nearest) to the attended map ``hw``;
    None stays None. ValueError naming ``who`` for a mask that is not [B,*,*]."""
    if mask is None:
        return None
    if mask.dim() != 3 or mask.shape[0] != b:
        raise ValueError(f"{who}: mask must be [B,h,w] bool, got {tuple(mask.shape)}.")
    if tuple(mask.shape[-2:]) != tuple(hw):
        mask = F.interpolate(mask[None].float(), size=tuple(hw), mode="nearest")[0] > 0.5
    return mask.bool()


# MODEL.MASK_FORMER.DECODER name -> builder ``fn(cfg, in_channels, num_classes) -> nn.Module`` whose
# forward(x, mask_features, mask=None) returns pred_logits / pred_masks / aux_outputs. Other decoders
# register from their own module (cmt_decoder.py, imported by simformer.py).
PREDICTOR_REGISTRY: Dict[str, Callable] = {}


def register_predictor(name: str) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        if name in PREDICTOR_REGISTRY and PREDICTOR_REGISTRY[name] is not fn:
            raise KeyError(f"transformer decoder '{name}' is already registered")
        PREDICTOR_REGISTRY[name] = fn
        return fn

    return deco


@register_predictor("maskformer")
def build_maskformer_predictor(cfg, in_channels: int, num_classes: int) -> TransformerPredictor:
    """TransformerPredictor from MODEL.MASK_FORMER.{HIDDEN_DIM, NHEADS, DIM_FEEDFORWARD, DROPOUT,
    DEC_LAYERS, NUM_OBJECT_QUERIES, DEEP_SUPERVISION} and MODEL.SEM_SEG_HEAD.MASK_DIM."""
    mf = cfg.MODEL.MASK_FORMER
    return TransformerPredictor(
        in_channels=int(in_channels),
        num_classes=int(num_classes),
        hidden_dim=int(mf.HIDDEN_DIM),
        num_queries=int(mf.NUM_OBJECT_QUERIES),
        nheads=int(mf.NHEADS),
        dropout=float(mf.DROPOUT),
        dim_feedforward=int(mf.DIM_FEEDFORWARD),
        dec_layers=int(mf.DEC_LAYERS),
        mask_dim=int(cfg.MODEL.SEM_SEG_HEAD.MASK_DIM),
        deep_supervision=bool(mf.DEEP_SUPERVISION),
    )


def build_transformer_predictor(cfg, in_channels: int, num_classes: int) -> nn.Module:
    """The decoder named by MODEL.MASK_FORMER.DECODER ("maskformer" default, "cmt"); ``in_channels``
    is the channel count of the pixel decoder's transformer input."""
    name = str(cfg.MODEL.MASK_FORMER.DECODER)
    if name not in PREDICTOR_REGISTRY:
        known = " or ".join(f"'{n}'" for n in sorted(PREDICTOR_REGISTRY))
        raise ValueError(
            f"MODEL.MASK_FORMER.DECODER must be {known}, got '{name}' (a decoder registers when its module "
            "is imported: simformer.modeling.cmt_decoder for 'cmt')."
        )
    return PREDICTOR_REGISTRY[name](cfg, in_channels, num_classes)
