//! The ViT encoder as Hugging Face's `modeling_vit` defines it: patch + [CLS] + position embeddings, a pre-LN
//! encoder (`layernorm_before` / `layernorm_after`), the final layer norm and the optional pooler.

use std::sync::Arc;

use candle_core::Tensor;

use super::config::VitConfig;
use super::patch::PatchEmbedding;
use crate::dropout::{Dropout, Mode};
use crate::error::{ModelError, Result};
use crate::grad_mode::param;
use crate::layers::{
    Activation, AttentionMask, AttentionSettings, LayerNorm, Linear, Mlp, MultiHeadAttention,
    NormPlacement, QkvProjection, TransformerLayer,
};
use crate::params::{Init, ParamLoader};

/// [CLS] token, patch embedding and learned position embeddings.
#[derive(Debug, Clone)]
pub struct VitEmbeddings {
    pub cls_token: Tensor,
    pub position_embeddings: Tensor,
    pub patch_embeddings: PatchEmbedding,
    image_size: usize,
    dropout: Dropout,
}

impl VitEmbeddings {
    fn load(l: &ParamLoader, c: &VitConfig, mode: &Arc<Mode>) -> Result<Self> {
        let h = c.hidden_size;
        let positions = c.grid() * c.grid() + 1;
        Ok(VitEmbeddings {
            cls_token: l.get("cls_token", &[1, 1, h], Init::Normal(c.initializer_range))?,
            position_embeddings: l.get(
                "position_embeddings",
                &[1, positions, h],
                Init::Normal(c.initializer_range),
            )?,
            patch_embeddings: PatchEmbedding::load(
                &l.pp("patch_embeddings").pp("projection"),
                c.num_channels,
                h,
                c.patch_size,
                true,
                c.initializer_range,
            )?,
            image_size: c.image_size,
            dropout: Dropout::new(c.hidden_dropout_prob, mode.clone()),
        })
    }

    /// `(B, C, S, S)` pixels → `(B, 1 + patches, H)`.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = pixel_values.dims4()?;
        if (h, w) != (self.image_size, self.image_size) {
            return Err(ModelError::Unsupported(format!(
                "input image size {h}x{w} does not match the model's {0}x{0} (position embeddings are not interpolated)",
                self.image_size
            )));
        }
        let patches = self.patch_embeddings.forward(pixel_values)?;
        let dim = patches.dim(2)?;
        let cls = param(&self.cls_token).broadcast_as((b, 1, dim))?;
        let x =
            Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&param(&self.position_embeddings))?;
        Ok(self.dropout.forward(&x)?)
    }
}

/// One pre-LN encoder layer under HF's names (`attention.attention.query`, `layernorm_before`, ...), its
/// parameters created in `ViTLayer`'s order.
fn load_layer(l: &ParamLoader, c: &VitConfig, mode: &Arc<Mode>) -> Result<TransformerLayer> {
    let (h, i, std) = (c.hidden_size, c.intermediate_size, c.initializer_range);
    if !c.qkv_bias {
        return Err(ModelError::Unsupported(
            "ViT with `qkv_bias: false` is not supported".into(),
        ));
    }
    let att = l.pp("attention");
    let qkv = QkvProjection::Separate {
        query: Linear::load(&att.pp("attention").pp("query"), h, h, std)?,
        key: Linear::load(&att.pp("attention").pp("key"), h, h, std)?,
        value: Linear::load(&att.pp("attention").pp("value"), h, h, std)?,
    };
    let output = Linear::load(&att.pp("output").pp("dense"), h, h, std)?;
    let settings = AttentionSettings {
        heads: c.num_attention_heads,
        scale: None,
        attention_dropout: c.attention_probs_dropout_prob,
        output_dropout: c.hidden_dropout_prob,
    };
    let attention = MultiHeadAttention::new(&att, qkv, output, settings, mode);
    let layernorm_before = LayerNorm::load(&l.pp("layernorm_before"), h, c.layer_norm_eps)?;
    let layernorm_after = LayerNorm::load(&l.pp("layernorm_after"), h, c.layer_norm_eps)?;
    let mlp = Mlp::new(
        Linear::load(&l.pp("intermediate").pp("dense"), h, i, std)?,
        Linear::load(&l.pp("output").pp("dense"), i, h, std)?,
        c.activation(),
        Dropout::new(c.hidden_dropout_prob, mode.clone()),
    );
    Ok(TransformerLayer::new(
        attention,
        layernorm_before,
        mlp,
        layernorm_after,
        NormPlacement::Before,
    ))
}

/// The outputs of the encoder.
#[derive(Debug, Clone)]
pub struct VitOutput {
    /// After the final layer norm, `(B, 1 + patches, H)`.
    pub last_hidden_state: Tensor,
    /// HF's `hidden_states`: the embeddings, then the output of each layer (before the final layer norm).
    pub hidden_states: Vec<Tensor>,
}

/// Embeddings, encoder, final layer norm and (optionally) the pooler: HF's `ViTModel`.
#[derive(Debug, Clone)]
pub struct VitModel {
    pub embeddings: VitEmbeddings,
    layers: Vec<TransformerLayer>,
    layernorm: LayerNorm,
    pooler: Option<(Linear, Activation)>,
}

impl VitModel {
    /// Builds the model from `l` (whose prefix is where `embeddings.*` lives).
    pub fn load(
        l: &ParamLoader,
        c: &VitConfig,
        mode: &Arc<Mode>,
        with_pooler: bool,
    ) -> Result<Self> {
        let embeddings = VitEmbeddings::load(&l.pp("embeddings"), c, mode)?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| load_layer(&l.pp("encoder.layer").pp(&i.to_string()), c, mode))
            .collect::<Result<Vec<_>>>()?;
        let layernorm = LayerNorm::load(&l.pp("layernorm"), c.hidden_size, c.layer_norm_eps)?;
        let pooler = if with_pooler {
            let dense = Linear::load(
                &l.pp("pooler").pp("dense"),
                c.hidden_size,
                c.pooler_output_size,
                c.initializer_range,
            )?;
            let act = Activation::from_hf(&c.pooler_act).unwrap_or(Activation::Tanh);
            Some((dense, act))
        } else {
            None
        };
        Ok(VitModel {
            embeddings,
            layers,
            layernorm,
            pooler,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    /// Runs the encoder on `(B, C, S, S)` pixel values.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<VitOutput> {
        let mut x = self.embeddings.forward(pixel_values)?;
        let mut hidden_states = vec![x.clone()];
        for layer in &self.layers {
            x = layer.forward(&x, &AttentionMask::default(), None)?;
            hidden_states.push(x.clone());
        }
        Ok(VitOutput {
            last_hidden_state: self.layernorm.forward(&x)?,
            hidden_states,
        })
    }

    /// The pooled output `act(W · h_[CLS] + b)`, when the model has a pooler.
    pub fn pool(&self, last_hidden_state: &Tensor) -> Result<Option<Tensor>> {
        match &self.pooler {
            Some((dense, act)) => {
                let cls = last_hidden_state.narrow(1, 0, 1)?.squeeze(1)?;
                Ok(Some(act.forward(&dense.forward(&cls)?)?))
            }
            None => Ok(None),
        }
    }
}
