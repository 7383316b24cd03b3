//! Fusion by cross attention: the tokens of modality A attend to those of modality B (and, optionally, B to A)
//! through the one shared [`MultiHeadAttention`] block, then residual + layer norm, pooled over valid tokens.

use std::sync::Arc;

use candle_core::Tensor;

use super::INIT_STD;
use crate::bert::mean_pool;
use crate::dropout::Mode;
use crate::error::{ModelError, Result};
use crate::layers::{
    AttentionMask, AttentionSettings, LayerNorm, Linear, MultiHeadAttention, QkvProjection,
};
use crate::params::ParamLoader;

/// Who attends to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A's tokens attend to B's; the pooled output is A's.
    AToB,
    /// A attends to B and B attends to A; the pooled output is the mean of the two pooled results (so its
    /// width is `width` either way).
    Both,
}

/// The shape of a [`CrossAttentionFusion`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossAttentionConfig {
    /// `[d_a, d_b]`: the token widths of modalities A and B.
    pub dims: [usize; 2],
    /// The attention (and output) width; a multiple of `heads`.
    pub width: usize,
    pub heads: usize,
    pub direction: Direction,
    /// Dropout on the attention probabilities and on the attention output (training mode only).
    pub dropout: f32,
}

impl CrossAttentionConfig {
    /// A attends to B, no dropout.
    pub fn new(dims: [usize; 2], width: usize, heads: usize) -> Self {
        CrossAttentionConfig {
            dims,
            width,
            heads,
            direction: Direction::AToB,
            dropout: 0.0,
        }
    }
}

/// What [`CrossAttentionFusion::forward`] returns.
#[derive(Debug, Clone)]
pub struct CrossAttentionOutput {
    /// `(B, width)`: the token outputs averaged over valid tokens (see [`Direction`] for `Both`).
    pub pooled: Tensor,
    /// `(B, T_a, width)`: A's tokens after attending to B.
    pub a_tokens: Tensor,
    /// `(B, T_b, width)`: B's tokens after attending to A, with [`Direction::Both`] only.
    pub b_tokens: Option<Tensor>,
}

/// One direction: `layer_norm(skip(x) + attention(x, context))`, where `skip` is the identity when the query
/// width equals `width` and a `Linear` (`residual`) otherwise.
#[derive(Debug, Clone)]
struct CrossBlock {
    attention: MultiHeadAttention,
    residual: Option<Linear>,
    norm: LayerNorm,
}

impl CrossBlock {
    fn load(
        loader: &ParamLoader,
        query_dim: usize,
        context_dim: usize,
        cfg: &CrossAttentionConfig,
        mode: &Arc<Mode>,
    ) -> Result<Self> {
        let width = cfg.width;
        let l = loader.pp("attention");
        let qkv = QkvProjection::Separate {
            query: Linear::load(&l.pp("query"), query_dim, width, INIT_STD)?,
            key: Linear::load(&l.pp("key"), context_dim, width, INIT_STD)?,
            value: Linear::load(&l.pp("value"), context_dim, width, INIT_STD)?,
        };
        let output = Linear::load(&l.pp("output"), width, width, INIT_STD)?;
        let settings = AttentionSettings {
            heads: cfg.heads,
            scale: None,
            attention_dropout: cfg.dropout,
            output_dropout: cfg.dropout,
        };
        let residual = if query_dim == width {
            None
        } else {
            Some(Linear::load(
                &loader.pp("residual"),
                query_dim,
                width,
                INIT_STD,
            )?)
        };
        Ok(CrossBlock {
            attention: MultiHeadAttention::new(&l, qkv, output, settings, mode),
            residual,
            norm: LayerNorm::load(&loader.pp("layer_norm"), width, 1e-12)?,
        })
    }

    /// `x: (B, T, d_q)`, `context: (B, S, d_kv)`, `context_mask: (B, S)` → `(B, T, width)`.
    fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        context_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mask = AttentionMask {
            key_padding_mask: context_mask,
            ..Default::default()
        };
        let attended = self.attention.forward(x, Some(context), &mask, None)?;
        let skip = match &self.residual {
            Some(p) => p.forward(x)?,
            None => x.clone(),
        };
        Ok(self.norm.forward(&(skip + attended)?)?)
    }
}

/// Cross-attention fusion of token sequences `a: (B, T_a, d_a)` and `b: (B, T_b, d_b)`.
///
/// Parameters, under `a_to_b.` (and `b_to_a.` with [`Direction::Both`]): `attention.{query,key,value,output}`
/// (queries from the attending modality's width, keys and values from the other's, all to `width`),
/// `residual` (only when the attending width differs from `width`) and `layer_norm`.
#[derive(Debug, Clone)]
pub struct CrossAttentionFusion {
    cfg: CrossAttentionConfig,
    a_to_b: CrossBlock,
    b_to_a: Option<CrossBlock>,
}

impl CrossAttentionFusion {
    pub fn load(
        loader: &ParamLoader,
        cfg: &CrossAttentionConfig,
        mode: &Arc<Mode>,
    ) -> Result<Self> {
        let [da, db] = cfg.dims;
        if cfg.heads == 0
            || cfg.width == 0
            || !cfg.width.is_multiple_of(cfg.heads)
            || da == 0
            || db == 0
        {
            return Err(ModelError::InvalidInput(format!(
                "cross-attention fusion: width {} must be a non-zero multiple of heads {} and the token widths \
                 {:?} non-zero",
                cfg.width, cfg.heads, cfg.dims
            )));
        }
        let a_to_b = CrossBlock::load(&loader.pp("a_to_b"), da, db, cfg, mode)?;
        let b_to_a = match cfg.direction {
            Direction::AToB => None,
            Direction::Both => Some(CrossBlock::load(&loader.pp("b_to_a"), db, da, cfg, mode)?),
        };
        Ok(CrossAttentionFusion {
            cfg: *cfg,
            a_to_b,
            b_to_a,
        })
    }

    pub fn config(&self) -> &CrossAttentionConfig {
        &self.cfg
    }

    /// `a: (B, T_a, d_a)`, `b: (B, T_b, d_b)`, the masks `(B, T)` (non-zero = a real token, zero = padding;
    /// `None`: all real). Padded tokens of B are never attended to by A (nor padded tokens of A by B), and no
    /// padded token counts in a pooled mean. Returns `pooled (B, width)` and the token outputs.
    pub fn forward(
        &self,
        a: &Tensor,
        a_mask: Option<&Tensor>,
        b: &Tensor,
        b_mask: Option<&Tensor>,
    ) -> Result<CrossAttentionOutput> {
        let [da, db] = self.cfg.dims;
        let (ba, ta) = check_tokens("a", a, a_mask, da)?;
        let (bb, tb) = check_tokens("b", b, b_mask, db)?;
        if ba != bb {
            return Err(ModelError::InvalidInput(format!(
                "cross-attention fusion: input a has batch size {ba}, input b has {bb}"
            )));
        }
        if ta == 0 || tb == 0 {
            return Err(ModelError::InvalidInput(format!(
                "cross-attention fusion: both inputs need at least one token, got a: {ta}, b: {tb}"
            )));
        }
        let a_tokens = self.a_to_b.forward(a, b, b_mask)?;
        let pooled_a = pool(&a_tokens, a_mask)?;
        let Some(b_to_a) = &self.b_to_a else {
            return Ok(CrossAttentionOutput {
                pooled: pooled_a,
                a_tokens,
                b_tokens: None,
            });
        };
        let b_tokens = b_to_a.forward(b, a, a_mask)?;
        let pooled = ((pooled_a + pool(&b_tokens, b_mask)?)? * 0.5)?;
        Ok(CrossAttentionOutput {
            pooled,
            a_tokens,
            b_tokens: Some(b_tokens),
        })
    }
}

/// `(B, T, width)` → `(B, width)`, the mean over the tokens `mask` marks real.
fn pool(tokens: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    Ok(match mask {
        Some(m) => mean_pool(tokens, m)?,
        None => tokens.mean(1)?,
    })
}

/// `(batch, tokens)` of a `(B, T, width)` input whose mask, if any, is `(B, T)`.
fn check_tokens(
    name: &str,
    x: &Tensor,
    mask: Option<&Tensor>,
    width: usize,
) -> Result<(usize, usize)> {
    let (b, t, got) = x.dims3().map_err(|_| {
        ModelError::InvalidInput(format!(
            "cross-attention fusion: input {name} must be (batch, tokens, {width}), got shape {:?}",
            x.dims()
        ))
    })?;
    if got != width {
        return Err(ModelError::InvalidInput(format!(
            "cross-attention fusion: input {name} has width {got}, expected {width}"
        )));
    }
    if let Some(m) = mask
        && m.dims() != [b, t]
    {
        return Err(ModelError::InvalidInput(format!(
            "cross-attention fusion: the mask of input {name} has shape {:?}, expected [{b}, {t}]",
            m.dims()
        )));
    }
    Ok((b, t))
}
