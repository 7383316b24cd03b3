//! BERT (Devlin et al.) as Hugging Face's `modeling_bert` defines it: embeddings, a post-LN encoder, the pooler,
//! and the masked-LM, sequence-classification and token-classification heads.

use std::sync::Arc;

use candle_core::{D, DType, Tensor};

use crate::config::BertConfig;
use crate::dropout::{Dropout, Mode};
use crate::error::Result;
use crate::layers::{
    Activation, AttentionMask, AttentionSettings, Embedding, LayerNorm, Linear, Mlp,
    MultiHeadAttention, NormPlacement, QkvProjection, Slot, TransformerLayer, WeightLayout,
};
use crate::params::ParamLoader;

/// Word + position + token-type embeddings, layer-normed.
#[derive(Debug, Clone)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
    dropout: Dropout,
    /// Virtual token embeddings `(P, hidden)` put in front of every row's (prompt tuning): the encoder's output
    /// then covers them first, as transformers computes with `inputs_embeds` that start with them.
    input_prompt: Slot<Tensor>,
}

impl BertEmbeddings {
    fn load(l: &ParamLoader, c: &BertConfig, mode: &Arc<Mode>) -> Result<Self> {
        let std = c.initializer_range;
        Ok(BertEmbeddings {
            word_embeddings: Embedding::load(
                &l.pp("word_embeddings"),
                c.vocab_size,
                c.hidden_size,
                std,
            )?,
            position_embeddings: Embedding::load_positions(
                &l.pp("position_embeddings"),
                c.max_position_embeddings,
                c.hidden_size,
                std,
            )?,
            token_type_embeddings: Embedding::load(
                &l.pp("token_type_embeddings"),
                c.type_vocab_size,
                c.hidden_size,
                std,
            )?,
            layer_norm: LayerNorm::load(&l.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
            dropout: Dropout::new(c.hidden_dropout_prob, mode.clone()),
            input_prompt: {
                let slot = Slot::default();
                l.store().register_input_prompt(l.name(), slot.clone());
                slot
            },
        })
    }

    /// `inputs_embeds`: word embeddings already looked up (B, T, H) — the hook for soft prompts and FGM.
    pub fn forward_embeds(
        &self,
        inputs_embeds: &Tensor,
        token_type_ids: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = inputs_embeds.dims3()?;
        let types = match token_type_ids {
            Some(ids) => ids.clone(),
            None => Tensor::zeros((b, t), DType::U32, inputs_embeds.device())?,
        };
        let types = self.token_type_embeddings.forward(&types)?;
        let x = self
            .position_embeddings
            .add_positions(inputs_embeds, None, 0)?
            .add(&types)?;
        self.dropout.forward(&self.layer_norm.forward(&x)?)
    }
}

/// One post-LN encoder layer under HF's names (`attention.self.query`, `attention.output.dense`, ...), its
/// parameters created in `BertLayer`'s order.
fn load_layer(l: &ParamLoader, c: &BertConfig, mode: &Arc<Mode>) -> Result<TransformerLayer> {
    let (h, i, std) = (c.hidden_size, c.intermediate_size, c.initializer_range);
    let att = l.pp("attention");
    let qkv = QkvProjection::Separate {
        query: Linear::load(&att.pp("self").pp("query"), h, h, std)?,
        key: Linear::load(&att.pp("self").pp("key"), h, h, std)?,
        value: Linear::load(&att.pp("self").pp("value"), h, h, std)?,
    };
    let settings = AttentionSettings {
        heads: c.num_attention_heads,
        scale: None,
        attention_dropout: c.attention_probs_dropout_prob,
        output_dropout: c.hidden_dropout_prob,
    };
    let output = Linear::load(&att.pp("output").pp("dense"), h, h, std)?;
    let attention = MultiHeadAttention::new(&att, qkv, output, settings, mode);
    let attention_norm = LayerNorm::load(&att.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?;
    let mlp = Mlp::new(
        Linear::load(&l.pp("intermediate").pp("dense"), h, i, std)?,
        Linear::load(&l.pp("output").pp("dense"), i, h, std)?,
        c.activation(),
        Dropout::new(c.hidden_dropout_prob, mode.clone()),
    );
    let output_norm = LayerNorm::load(&l.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?;
    Ok(TransformerLayer::new(
        attention,
        attention_norm,
        mlp,
        output_norm,
        NormPlacement::After,
    ))
}

/// The encoder stack with embeddings and (optionally) the pooler: HF's `BertModel`.
#[derive(Debug, Clone)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    layers: Vec<TransformerLayer>,
    pooler: Option<Linear>,
}

impl BertModel {
    /// Builds the model from `l` (whose prefix is where `embeddings.*` lives).
    pub fn load(
        l: &ParamLoader,
        c: &BertConfig,
        mode: &Arc<Mode>,
        with_pooler: bool,
    ) -> Result<Self> {
        let embeddings = BertEmbeddings::load(&l.pp("embeddings"), c, mode)?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| load_layer(&l.pp("encoder.layer").pp(&i.to_string()), c, mode))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if with_pooler {
            Some(Linear::load(
                &l.pp("pooler").pp("dense"),
                c.hidden_size,
                c.hidden_size,
                c.initializer_range,
            )?)
        } else {
            None
        };
        Ok(BertModel {
            embeddings,
            layers,
            pooler,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Last hidden state (B, T, H). `attention_mask`: (B, T), 1 = token, 0 = padding.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let embeds = self.embeddings.word_embeddings.forward(input_ids)?;
        self.forward_embeds(&embeds, token_type_ids, attention_mask)
    }

    /// As [`forward`](Self::forward), from word embeddings already looked up.
    pub fn forward_embeds(
        &self,
        inputs_embeds: &Tensor,
        token_type_ids: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let prompted;
        let (inputs_embeds, token_type_ids, attention_mask) =
            match self.embeddings.input_prompt.get() {
                Some(prompt) => {
                    prompted =
                        prepend_prompt(&prompt, inputs_embeds, token_type_ids, attention_mask)?;
                    (&prompted.0, prompted.1.as_ref(), prompted.2.as_ref())
                }
                None => (inputs_embeds, token_type_ids, attention_mask),
            };
        let mut x = self
            .embeddings
            .forward_embeds(inputs_embeds, token_type_ids)?;
        let mask = AttentionMask {
            key_padding_mask: attention_mask,
            ..AttentionMask::default()
        };
        for layer in &self.layers {
            x = layer.forward(&x, &mask, None)?;
        }
        Ok(x)
    }

    /// The pooled output: tanh(W · h_[CLS] + b), when the model has a pooler.
    pub fn pool(&self, sequence_output: &Tensor) -> candle_core::Result<Option<Tensor>> {
        match &self.pooler {
            Some(dense) => {
                let cls = sequence_output.narrow(1, 0, 1)?.squeeze(1)?;
                Ok(Some(dense.forward(&cls)?.tanh()?))
            }
            None => Ok(None),
        }
    }
}

/// The masked-LM head: transform (dense, activation, layer norm) then a decoder tied to the word embeddings.
/// `prompt (P, H)` in front of `embeds (B, T, H)`; token type 0 and attention 1 for the virtual tokens (PEFT's
/// arrangement).
fn prepend_prompt(
    prompt: &Tensor,
    embeds: &Tensor,
    token_type_ids: Option<&Tensor>,
    attention_mask: Option<&Tensor>,
) -> candle_core::Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
    let (b, _, h) = embeds.dims3()?;
    let p = prompt.dim(0)?;
    let prompt = prompt
        .unsqueeze(0)?
        .broadcast_as((b, p, h))?
        .to_dtype(embeds.dtype())?;
    let embeds = Tensor::cat(&[&prompt, embeds], 1)?;
    let front = |t: &Tensor, value: f64| -> candle_core::Result<Tensor> {
        let pad = Tensor::full(value, (b, p), t.device())?.to_dtype(t.dtype())?;
        Tensor::cat(&[&pad, t], 1)
    };
    let types = token_type_ids.map(|t| front(t, 0.0)).transpose()?;
    let mask = attention_mask.map(|m| front(m, 1.0)).transpose()?;
    Ok((embeds, types, mask))
}

#[derive(Debug, Clone)]
pub struct MaskedLmHead {
    dense: Linear,
    activation: Activation,
    layer_norm: LayerNorm,
    /// Tied to the word embeddings, with its own bias `cls.predictions.bias`.
    decoder: Linear,
}

impl MaskedLmHead {
    pub fn load(l: &ParamLoader, c: &BertConfig, word_embeddings: &Tensor) -> Result<Self> {
        let t = l.pp("transform");
        Ok(MaskedLmHead {
            dense: Linear::load(
                &t.pp("dense"),
                c.hidden_size,
                c.hidden_size,
                c.initializer_range,
            )?,
            activation: c.activation(),
            layer_norm: LayerNorm::load(&t.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
            decoder: Linear::from_weights(
                word_embeddings.clone(),
                Some(l.get("bias", &[c.vocab_size], crate::params::Init::Zeros)?),
                WeightLayout::OutIn,
            ),
        })
    }

    /// Vocabulary logits (…, V) for hidden states (…, H).
    pub fn forward(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let x = self
            .layer_norm
            .forward(&self.activation.forward(&self.dense.forward(hidden)?)?)?;
        self.decoder.forward_rows(&x)
    }
}

/// Mean of the hidden states over real tokens (sentence-transformers' mean pooling).
pub fn mean_pool(hidden: &Tensor, attention_mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = attention_mask
        .to_dtype(hidden.dtype())?
        .unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::INFINITY)?;
    summed.broadcast_div(&counts)
}

/// Divides each row by its L2 norm.
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    x.broadcast_div(&norm)
}
