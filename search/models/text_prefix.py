"""CLIP's text tower run only up to the last end-of-text token (queries, batches, exports)."""

from __future__ import annotations

import open_clip
import torch
from open_clip.transformer import text_global_pool


def token_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """[batch] tokens up to and including end-of-text (CLIP's EOT has the highest id)."""
    return tokens.argmax(dim=-1) + 1


def supports_prefix(model) -> bool:
    """A causal CLIP text tower pooled at the EOT token: its padded tail is never read."""
    return (
        isinstance(model, open_clip.CLIP)
        and getattr(model, "text_pool_type", None) == "argmax"
        and getattr(model, "attn_mask", None) is not None
    )


def trim_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """[batch, length]: the columns up to the batch's last end-of-text token."""
    return tokens[:, : int(token_lengths(tokens).max())]


def encode_text_prefix(model, tokens: torch.Tensor,
                       tower: torch.nn.Module | None = None) -> torch.Tensor:
    """CLIP.encode_text run only up to the batch's last end-of-text token.

    The text tower is causal and pools at the EOT position, so the padded tail never
    influences the output: same embeddings as the full context, far less compute.
    `tower` replaces the model's transformer (its int8 copy, for queries).
    """
    tokens = trim_tokens(tokens)  # [batch, length]
    length = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)  # [batch, length, width]
    x = x + model.positional_embedding[:length].to(cast_dtype)
    tower = tower if tower is not None else model.transformer
    x = tower(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type)  # [batch, width]
    return _project(model, x)


def _project(model, pooled: torch.Tensor) -> torch.Tensor:
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(pooled)
    return pooled @ model.text_projection  # [batch, embed_dim]


class TextPrefixGraph(torch.nn.Module):
    """`encode_text_prefix` as a graph to export: tokens [batch, length], already trimmed,
    -> features [batch, embed_dim]; the length is read from the input, so one exported
    graph serves every query length (sequence axis dynamic).

    Self-attention is spelled out: torch's multi_head_attention_forward reads the key's
    length as a Python int, which the TorchScript exporter freezes at the sample's length.
    """

    def __init__(self, model) -> None:
        super().__init__()
        for block in model.transformer.resblocks:
            _check_exportable(block)
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        model, length = self.model, tokens.shape[1]
        x = model.token_embedding(tokens) + model.positional_embedding[:length]
        mask = model.attn_mask[:length, :length].to(x.dtype)  # [length, length] causal
        for block in model.transformer.resblocks:  # [batch, length, width] throughout
            x = x + block.ls_1(_self_attention(block.attn, block.ln_1(x), mask))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        x = model.ln_final(x)
        # Pool at the EOT token with gather: indices are never negative by construction.
        eot = tokens.argmax(dim=-1)[:, None, None].expand(-1, 1, x.shape[-1])
        return _project(model, x.gather(1, eot).squeeze(1))


def _check_exportable(block) -> None:
    attn = getattr(block, "attn", None)
    plain = (isinstance(attn, torch.nn.MultiheadAttention) and attn._qkv_same_embed_dim
             and attn.bias_k is None and not hasattr(block, "ln_1_kv"))
    if not plain:
        raise ValueError(f"text block {type(block).__name__} is not a plain "
                         "nn.MultiheadAttention block: not exported")


def _self_attention(attn: torch.nn.MultiheadAttention, x: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    """nn.MultiheadAttention(x, x, x, attn_mask=mask) on batch-first x [batch, length, width]."""
    batch, heads = x.shape[0], attn.num_heads
    head_dim = attn.embed_dim // heads
    qkv = torch.nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = (part.reshape(batch, -1, heads, head_dim).transpose(1, 2)  # [b, h, l, d]
               for part in qkv.chunk(3, dim=-1))
    scores = (q @ k.transpose(-2, -1)) * head_dim**-0.5 + mask  # [b, h, l, l]
    out = scores.softmax(dim=-1) @ v  # [b, h, l, d]
    return attn.out_proj(out.transpose(1, 2).reshape(batch, -1, attn.embed_dim))
