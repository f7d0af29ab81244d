"""CMT-DeepLab's clustering mask-transformer decoder (``MODEL.MASK_FORMER.DECODER cmt``, docs/cmt.md).

The object queries are cluster centres C [B,Q,D]; the pixel features F [B,N,D] (N = h*w tokens at
``CMT.PIXEL_STRIDE``) are a second stream that every layer updates. Layer l (paper equation numbers):

* location (Eq. 11-12): C <- C + W_c [C, r^c], F <- F + W_p [F, r^p] (a coordinate 1x1 conv as
  identity + zero-initialised conv), r^c = the centres' reference points, r^p = pixel coordinates;
* self-attention among the centres (as MaskFormer);
* assignment (Eq. 6): S_l = S_{l-1} + K~(F + pos) Q~(C + query_pos)^T / sqrt(D), Z = softmax_Q(S_l)
  (kept cluster-major in the code, Z^T [B,Q,N]);
* centre update (Eq. 7): C <- C + MHA_HW(C, F) + W_o (Z^T V^p), V^p the cross-attention's values;
* pixel update (Eq. 8): F <- LayerNorm(F + Z V^c), V^c = Linear(C) (from the same C as Z: the two
  updates are simultaneous); not in the last layer, whose pixels nothing reads;
* FFN on the centres (as MaskFormer); reference refinement (Eq. 9-10): e <- e + MLP_l(norm(C)),
  r^c = sigmoid(e), with e_0 = Linear(query embedding).

Outputs are MaskFormer's (``pred_logits``, ``pred_masks``, ``aux_outputs``), plus ``pred_refs``
[B,Q,M,2] (y, x in [0, 1]) per layer with location. The mask logits of layer l are MaskFormer's
mask-embedding product plus the layer's assignment logits S_l upsampled to the mask features: the
segmentation output is the last step of Eq. 6's residual chain, so the ground truth supervises it.
With every switch off the decoder is MaskFormer's, parameter for parameter (same state dict names).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .transformer_decoder import MLP, DecoderLayer, TransformerPredictor, padding_mask_at, register_predictor

__all__ = ["coord_grid", "coord_conv", "interpolation_matrix", "assignment_affinity", "cluster_assignment",
           "cluster_update", "pixel_update", "CMTDecoderLayer", "CMTDecoder", "CMTPredictor", "build_cmt_predictor"]

PIXEL_STRIDES = (0, 4, 8)
MASK_FEATURE_STRIDE = 4  # the FPN pixel decoder's mask features are at res2 (stride 4)


def coord_grid(h: int, w: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates ``[(i + 0.5) / h, (j + 0.5) / w]`` in row-major order: ``[h*w, 2]`` (y, x)."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(h * w, 2)


# Assignments are kept cluster-major, Z^T [B,Q,N] (the paper's Z is [N,Q]): each row is a soft
# mask over the pixels, so the upsampled logits are views and no transposed copies are made.
def assignment_affinity(pixels: torch.Tensor, centres: torch.Tensor, key: nn.Linear, query: nn.Linear) -> torch.Tensor:
    """(K~ Q~^T)^T / sqrt(D) of Eq. 6 with K~ = key(pixels) [B,N,D], Q~ = query(centres) [B,Q,D] -> [B,Q,N].

    Computed as (Q~ W_k) pixels^T + Q~ b_k: the key projection moves to the Q centres, so no
    N x D x D product is needed (Q < D), and the result is the same bilinear form."""
    q = query(centres)
    return ((q @ key.weight) @ pixels.transpose(1, 2) + (q @ key.bias)[:, :, None]) / math.sqrt(q.shape[-1])


def cluster_assignment(prev_logits: Optional[torch.Tensor], affinity: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6: affinity [B,Q,N] (this layer's), prev_logits [B,Q,N] (S of the previous layer) or
    None -> (logits S = prev + affinity, Z^T = softmax over the Q clusters, dim 1), both [B,Q,N]."""
    logits = affinity if prev_logits is None else prev_logits + affinity
    return logits, logits.softmax(1)


def cluster_update(zt: torch.Tensor, pixels: torch.Tensor, value_weight: torch.Tensor, value_bias: torch.Tensor, *,
                   mean: bool, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The clustering term of Eq. 7, Z^T V^p with V^p = pixels W_v^T + b_v: zt = Z^T [B,Q,N],
    pixels [B,N,D], value_weight [D,D], value_bias [D] -> [B,Q,D].

    ``valid`` bool [B,N] drops padded pixels; ``mean`` divides every cluster's row of Z^T by its
    soft size sum_n Z[n,q] (a k-means centre), False = the plain sum printed in the paper. Computed
    as (Z^T pixels) W_v^T + (Z^T 1) b_v: pooling before projecting avoids an N x D x D product."""
    if valid is not None:
        zt = zt * valid[:, None, :].to(zt.dtype)
    if mean:
        zt = zt / zt.sum(-1, keepdim=True).clamp(min=1e-6)
    return F.linear(zt @ pixels, value_weight) + zt.sum(-1, keepdim=True) * value_bias


def pixel_update(zt: torch.Tensor, centre_values: torch.Tensor) -> torch.Tensor:
    """The update term of Eq. 8, Z V^c: zt = Z^T [B,Q,N], centre_values [B,Q,D] -> [B,N,D]."""
    return zt.transpose(1, 2) @ centre_values


def coord_conv(conv: nn.Linear, feats: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution of Concat(feats, coords) (Eq. 11-12): feats [B,T,D], coords [B or 1,T,P]
    -> [B,T,D_out]. The two weight blocks are applied separately: the coordinate part is computed
    once for a batch-shared grid and no concatenated copy is made."""
    d = feats.shape[-1]
    return F.linear(feats, conv.weight[:, :d]) + F.linear(coords, conv.weight[:, d:], conv.bias)


def interpolation_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """[n_in, n_out] weights of 1-D linear interpolation (align_corners False): row j = the response
    to a unit impulse at input j, so ``x @ W`` resamples the last axis as F.interpolate does."""
    eye = torch.eye(n_in, device=like.device, dtype=like.dtype)[None]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0]


class CMTDecoderLayer(DecoderLayer):
    """MaskFormer's post-norm decoder layer with the CMT terms (module docstring); the MaskFormer
    parameters keep their names, the CMT ones exist only when their switch is on."""

    def __init__(self, *, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 cluster_update: bool = True, cluster_update_mean: bool = True, pixel_update: bool = True,
                 num_ref_points: int = 8):
        super().__init__(d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout)
        self.use_cluster_update = bool(cluster_update)
        self.cluster_update_mean = bool(cluster_update_mean)
        self.use_pixel_update = bool(pixel_update)
        self.num_ref_points = int(num_ref_points)
        self.assigns = self.use_cluster_update or self.use_pixel_update
        if self.assigns:
            self.cluster_query = nn.Linear(d_model, d_model)  # Q~ of Eq. 6
            self.cluster_key = nn.Linear(d_model, d_model)  # K~ of Eq. 6
        if self.use_pixel_update:
            self.centre_value = nn.Linear(d_model, d_model)  # V^c of Eq. 8
            self.pixel_norm = nn.LayerNorm(d_model)
            self.dropout4 = nn.Dropout(dropout)
        if self.num_ref_points > 0:
            self.coord_centre = nn.Linear(d_model + 2 * self.num_ref_points, d_model)  # Eq. 11
            self.coord_pixel = nn.Linear(d_model + 2, d_model)  # Eq. 12
        self.reset_coord_convs()

    def reset_coord_convs(self) -> None:
        """Zero the coordinate convolutions: a fresh layer starts as the location-free one."""
        if self.num_ref_points > 0:
            for m in (self.coord_centre, self.coord_pixel):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, *, query_pos: torch.Tensor, pos: torch.Tensor,
                memory_key_padding_mask: Optional[torch.Tensor] = None, prev_logits: Optional[torch.Tensor] = None,
                ref_centre: Optional[torch.Tensor] = None, ref_pixel: Optional[torch.Tensor] = None):
        """tgt, query_pos: centres [B,Q,D]; memory, pos: pixels [B,N,D]; padding mask bool [B,N];
        prev_logits [B,Q,N] (S of the previous layer or None); ref_centre [B,Q,2M] and ref_pixel
        [1 or B,N,2] with location. Returns (centres [B,Q,D], pixels [B,N,D], logits S [B,Q,N] or
        None, assignment Z^T [B,Q,N] or None)."""
        if self.num_ref_points > 0:
            if ref_centre is None or ref_pixel is None:
                raise ValueError("CMTDecoderLayer: location is on but ref_centre / ref_pixel is None.")
            tgt = tgt + coord_conv(self.coord_centre, tgt, ref_centre)
            memory = memory + coord_conv(self.coord_pixel, memory, ref_pixel)
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, q, tgt, need_weights=False)[0]))
        attn = self.cross_attn(
            tgt + query_pos, memory + pos, memory,
            key_padding_mask=memory_key_padding_mask, need_weights=False,
        )[0]
        logits = z = None
        if self.assigns:
            affinity = assignment_affinity(memory + pos, tgt + query_pos, self.cluster_key, self.cluster_query)
            logits, z = cluster_assignment(prev_logits, affinity)
            if self.use_cluster_update:
                # Eq. 7 with the cross-attention's own values V^p and output projection per head:
                # W_o((A + Z^T) V) + b_o = MHA + W_o Z^T V.
                d = memory.shape[-1]
                valid = None if memory_key_padding_mask is None else ~memory_key_padding_mask
                update = cluster_update(z, memory, self.cross_attn.in_proj_weight[2 * d:],
                                        self.cross_attn.in_proj_bias[2 * d:], mean=self.cluster_update_mean, valid=valid)
                attn = attn + F.linear(update, self.cross_attn.out_proj.weight)
            if self.use_pixel_update:
                delta = pixel_update(z, self.centre_value(tgt))
                memory = self.pixel_norm(memory + self.dropout4(delta))
        tgt = self.norm2(tgt + self.dropout2(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn)), memory, logits, z


class CMTDecoder(nn.Module):
    """A stack of CMTDecoderLayer with the shared final LayerNorm (names as TransformerDecoder) and,
    with location, the reference-mask embedding ``ref_init`` and one refinement MLP per layer."""

    def __init__(self, *, num_layers: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 cluster_update: bool, cluster_update_mean: bool, pixel_update: bool, num_ref_points: int):
        super().__init__()
        self.num_ref_points = int(num_ref_points)
        # The last layer's updated pixels would feed nothing (the masks use the mask features and S),
        # so it has no pixel update: no parameter without a gradient (DDP).
        self.layers = nn.ModuleList(
            CMTDecoderLayer(d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                            cluster_update=cluster_update, cluster_update_mean=cluster_update_mean,
                            pixel_update=pixel_update and i < num_layers - 1, num_ref_points=num_ref_points)
            for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        if self.num_ref_points > 0:
            self.ref_init = nn.Linear(d_model, 2 * self.num_ref_points)  # e_0 from the query embedding
            self.ref_heads = nn.ModuleList(
                MLP(in_dim=d_model, hidden_dim=d_model, out_dim=2 * self.num_ref_points, num_layers=3)
                for _ in range(num_layers)
            )

    def reset_parameters(self) -> None:
        """DETR's Xavier-uniform on every matrix, then zero coordinate convolutions and zero last
        refinement layers (each layer starts from the previous reference mask, Deformable DETR)."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for layer in self.layers:
            layer.reset_coord_convs()
        if self.num_ref_points > 0:
            nn.init.zeros_(self.ref_init.bias)  # Xavier weights spread the queries' first points
            for head in self.ref_heads:
                nn.init.zeros_(head.layers[-1].weight)
                nn.init.zeros_(head.layers[-1].bias)

    def forward(self, tgt, memory, *, query_pos, pos, grid_hw: Tuple[int, int],
                memory_key_padding_mask=None) -> dict:
        """Returns {"hs": [L,B,Q,D] normed centres, "logits": [S_l [B,Q,N]], "assignments": [Z_l^T],
        "refs": [r_l [B,Q,M,2]]} (lists empty when the term is off)."""
        out = {"hs": [], "logits": [], "assignments": [], "refs": []}
        loc = self.num_ref_points > 0
        ref_pixel = coord_grid(*grid_hw, device=memory.device, dtype=memory.dtype)[None] if loc else None
        e = self.ref_init(query_pos) if loc else None
        logits = None
        for i, layer in enumerate(self.layers):
            tgt, memory, logits, z = layer(
                tgt, memory, query_pos=query_pos, pos=pos, memory_key_padding_mask=memory_key_padding_mask,
                prev_logits=logits, ref_centre=e.sigmoid() if loc else None, ref_pixel=ref_pixel,
            )
            h = self.norm(tgt)
            out["hs"].append(h)
            if logits is not None:
                out["logits"].append(logits)
                out["assignments"].append(z)
            if loc:
                e = e + self.ref_heads[i](h)  # Eq. 9: residual in logit space across stages
                out["refs"].append(e.sigmoid().unflatten(-1, (self.num_ref_points, 2)))  # Eq. 10
        out["hs"] = torch.stack(out["hs"])
        return out


class CMTPredictor(TransformerPredictor):
    """MaskFormer's predictor with the CMT decoder (module docstring).

    Extra args: pixel_stride (0 = cluster the input map ``x`` as MaskFormer attends to it; 4 / 8 =
    the mask features, average-pooled to that stride), the switches cluster_update,
    cluster_update_mean, pixel_update, and num_ref_points (M; 0 = no location-sensitive clustering).
    With pixel_stride 4 or 8, ``in_channels`` must be ``mask_dim``.
    """

    def __init__(self, *, in_channels: int, num_classes: int, hidden_dim: int = 256, num_queries: int = 100,
                 nheads: int = 8, dropout: float = 0.1, dim_feedforward: int = 2048, dec_layers: int = 6,
                 mask_dim: int = 256, deep_supervision: bool = True, pixel_stride: int = 8,
                 cluster_update: bool = True, cluster_update_mean: bool = True, pixel_update: bool = True,
                 num_ref_points: int = 8):
        if pixel_stride not in PIXEL_STRIDES:
            raise ValueError(f"MODEL.MASK_FORMER.CMT.PIXEL_STRIDE must be one of {PIXEL_STRIDES}, got {pixel_stride}.")
        if num_ref_points < 0:
            raise ValueError(f"MODEL.MASK_FORMER.CMT.NUM_REF_POINTS must be >= 0, got {num_ref_points}.")
        if pixel_stride and in_channels != mask_dim:
            raise ValueError(f"CMTPredictor: with PIXEL_STRIDE {pixel_stride} the input is the mask features: "
                             f"in_channels ({in_channels}) must equal mask_dim ({mask_dim}).")
        super().__init__(in_channels=in_channels, num_classes=num_classes, hidden_dim=hidden_dim,
                         num_queries=num_queries, nheads=nheads, dropout=dropout, dim_feedforward=dim_feedforward,
                         dec_layers=dec_layers, mask_dim=mask_dim, deep_supervision=deep_supervision)
        self.pixel_stride = int(pixel_stride)
        self.num_ref_points = int(num_ref_points)
        self.decoder = CMTDecoder(num_layers=dec_layers, d_model=hidden_dim, nhead=nheads,
                                  dim_feedforward=dim_feedforward, dropout=dropout, cluster_update=cluster_update,
                                  cluster_update_mean=cluster_update_mean, pixel_update=pixel_update,
                                  num_ref_points=num_ref_points)
        self.decoder.reset_parameters()

    def _pixels(self, x: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
        """The map the layers cluster: ``x``, the mask features, or them average-pooled."""
        if self.pixel_stride == 0:
            return x
        k = self.pixel_stride // MASK_FEATURE_STRIDE
        return mask_features if k == 1 else F.avg_pool2d(mask_features, k, ceil_mode=True)

    def forward(self, x: torch.Tensor, mask_features: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
                return_assignments: bool = False) -> dict:
        """x: the transformer input [B,C,h,w] (used with pixel_stride 0); mask_features
        [B,mask_dim,H,W] (stride 4); mask: bool padding mask, True = padded, any [B,h',w'] (nearest
        resize), or None.

        Returns MaskFormer's {"pred_logits" [B,Q,K+1], "pred_masks" [B,Q,H,W], "aux_outputs"}, each
        with "pred_refs" [B,Q,M,2] when location is on; with ``return_assignments`` also
        "assignments": the layers' Z^T [B,Q,h*w] (pixels at the clustering stride, row-major;
        every pixel's column sums to 1 over the Q clusters)."""
        b = mask_features.shape[0]
        if mask_features.dim() != 4 or mask_features.shape[1] != self.mask_dim:
            raise ValueError(
                f"CMTPredictor: mask_features must be [B, mask_dim={self.mask_dim}, H, W], "
                f"got {tuple(mask_features.shape)}."
            )
        pixels = self._pixels(x, mask_features)
        if pixels.dim() != 4 or pixels.shape[:2] != (b, self.in_channels):
            raise ValueError(f"CMTPredictor: the clustered map must be [B={b}, {self.in_channels}, h, w], got "
                             f"{tuple(pixels.shape)} (MODEL.MASK_FORMER.CMT.PIXEL_STRIDE {self.pixel_stride}).")
        h, w = pixels.shape[-2:]
        mask = padding_mask_at(mask, b, (h, w), "CMTPredictor")

        tgt, memory, query_pos, pos, key_mask = self.decoder_inputs(pixels, mask)  # memory, pos [B,N,D]
        dec = self.decoder(tgt, memory, query_pos=query_pos, pos=pos, grid_hw=(h, w), memory_key_padding_mask=key_mask)

        hs = dec["hs"]  # [L,B,Q,D]
        keep = slice(None) if self.deep_supervision else slice(-1, None)
        hs = hs[keep]
        logits = self.class_embed(hs)
        masks = torch.einsum("lbqc,bchw->lbqhw", self.mask_embed(hs), mask_features)
        if dec["logits"]:
            masks = masks + self._upsampled(torch.stack(dec["logits"][keep]), h, w, mask_features.shape[-2:])
        refs: List[Optional[torch.Tensor]] = dec["refs"][keep] if dec["refs"] else [None] * hs.shape[0]
        layers = []
        for lg, m, r in zip(logits, masks, refs):
            d = {"pred_logits": lg, "pred_masks": m}
            if r is not None:
                d["pred_refs"] = r
            layers.append(d)
        out = dict(layers[-1])
        if self.deep_supervision:
            out["aux_outputs"] = layers[:-1]
        if return_assignments:
            out["assignments"] = dec["assignments"]
        return out

    @staticmethod
    def _upsampled(logits: torch.Tensor, h: int, w: int, size) -> torch.Tensor:
        """Assignment logits [L,B,Q,h*w] -> [L,B,Q,H,W] at the mask-feature size: bilinear
        (align_corners False), applied as its two separable 1-D interpolation matrices (matrix
        products are much cheaper than the interpolation kernel's backward on CPU)."""
        grid = logits.unflatten(-1, (h, w))
        if (h, w) == tuple(size):
            return grid
        return interpolation_matrix(h, size[0], grid).transpose(0, 1) @ grid @ interpolation_matrix(w, size[1], grid)


@register_predictor("cmt")
def build_cmt_predictor(cfg, in_channels: int, num_classes: int) -> CMTPredictor:
    """CMTPredictor from MODEL.MASK_FORMER.* (as the MaskFormer decoder) and MODEL.MASK_FORMER.CMT.*;
    ``in_channels`` (the transformer input's) is used with PIXEL_STRIDE 0, MASK_DIM otherwise."""
    mf, cmt = cfg.MODEL.MASK_FORMER, cfg.MODEL.MASK_FORMER.CMT
    mask_dim = int(cfg.MODEL.SEM_SEG_HEAD.MASK_DIM)
    stride = int(cmt.PIXEL_STRIDE)
    return CMTPredictor(
        in_channels=int(in_channels) if stride == 0 else mask_dim,
        num_classes=int(num_classes),
        hidden_dim=int(mf.HIDDEN_DIM),
        num_queries=int(mf.NUM_OBJECT_QUERIES),
        nheads=int(mf.NHEADS),
        dropout=float(mf.DROPOUT),
        dim_feedforward=int(mf.DIM_FEEDFORWARD),
        dec_layers=int(mf.DEC_LAYERS),
        mask_dim=mask_dim,
        deep_supervision=bool(mf.DEEP_SUPERVISION),
        pixel_stride=stride,
        cluster_update=bool(cmt.CLUSTER_UPDATE),
        cluster_update_mean=bool(cmt.CLUSTER_UPDATE_MEAN),
        pixel_update=bool(cmt.PIXEL_UPDATE),
        num_ref_points=int(cmt.NUM_REF_POINTS) if cmt.LOCATION else 0,
    )
