//! BERT (Devlin et al.) as Hugging Face's `modeling_bert` defines it: embeddings, a post-LN encoder, the pooler,
//! and the masked-LM, sequence-classification and token-classification heads.

use std::sync::Arc;

use candle_core::{D, DType, Tensor};
use mosaic_kernels::AttentionOptions;

use crate::config::BertConfig;
use crate::dropout::{Dropout, Mode};
use crate::error::Result;
use crate::layers::{Activation, Embedding, LayerNorm, Linear};
use crate::params::ParamLoader;

/// Word + position + token-type embeddings, layer-normed.
#[derive(Debug, Clone)]
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
    dropout: Dropout,
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
            position_embeddings: Embedding::load(
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
        })
    }

    /// `inputs_embeds`: word embeddings already looked up (B, T, H) — the hook for soft prompts and FGM.
    pub fn forward_embeds(
        &self,
        inputs_embeds: &Tensor,
        token_type_ids: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = inputs_embeds.dims3()?;
        let device = inputs_embeds.device();
        let positions = Tensor::arange(0u32, t as u32, device)?;
        let pos = self.position_embeddings.forward(&positions)?.unsqueeze(0)?;
        let types = match token_type_ids {
            Some(ids) => ids.clone(),
            None => Tensor::zeros((b, t), DType::U32, device)?,
        };
        let types = self.token_type_embeddings.forward(&types)?;
        let x = inputs_embeds.broadcast_add(&pos)?.add(&types)?;
        self.dropout.forward(&self.layer_norm.forward(&x)?)
    }
}

#[derive(Debug, Clone)]
struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    activation: Activation,
    heads: usize,
    attention_dropout: f32,
    dropout: Dropout,
    mode: Arc<Mode>,
}

impl BertLayer {
    fn load(l: &ParamLoader, c: &BertConfig, mode: &Arc<Mode>) -> Result<Self> {
        let (h, i, std) = (c.hidden_size, c.intermediate_size, c.initializer_range);
        let att = l.pp("attention");
        Ok(BertLayer {
            query: Linear::load(&att.pp("self").pp("query"), h, h, std)?,
            key: Linear::load(&att.pp("self").pp("key"), h, h, std)?,
            value: Linear::load(&att.pp("self").pp("value"), h, h, std)?,
            attention_output: Linear::load(&att.pp("output").pp("dense"), h, h, std)?,
            attention_norm: LayerNorm::load(
                &att.pp("output").pp("LayerNorm"),
                h,
                c.layer_norm_eps,
            )?,
            intermediate: Linear::load(&l.pp("intermediate").pp("dense"), h, i, std)?,
            output: Linear::load(&l.pp("output").pp("dense"), i, h, std)?,
            output_norm: LayerNorm::load(&l.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
            activation: c.activation(),
            heads: c.num_attention_heads,
            attention_dropout: c.attention_probs_dropout_prob,
            dropout: Dropout::new(c.hidden_dropout_prob, mode.clone()),
            mode: mode.clone(),
        })
    }

    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        x.reshape((b, t, self.heads, h / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let q = self.split_heads(&self.query.forward(x)?)?;
        let k = self.split_heads(&self.key.forward(x)?)?;
        let v = self.split_heads(&self.value.forward(x)?)?;
        let training = self.mode.is_training();
        let opts = AttentionOptions {
            scale: None,
            causal: false,
            key_padding_mask: mask.cloned(),
            dropout: if training {
                self.attention_dropout
            } else {
                0.0
            },
            seed: if training { self.mode.next_seed() } else { 0 },
            segment_ids: None,
        };
        let ctx = mosaic_kernels::attention(&q, &k, &v, &opts)?
            .transpose(1, 2)?
            .reshape((b, t, h))?;
        let attended = self
            .dropout
            .forward(&self.attention_output.forward(&ctx)?)?;
        let x = self.attention_norm.forward(&attended.add(x)?)?;
        let inner = self.activation.forward(&self.intermediate.forward(&x)?)?;
        let out = self.dropout.forward(&self.output.forward(&inner)?)?;
        self.output_norm.forward(&out.add(&x)?)
    }
}

/// The encoder stack with embeddings and (optionally) the pooler: HF's `BertModel`.
#[derive(Debug, Clone)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
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
            .map(|i| BertLayer::load(&l.pp("encoder.layer").pp(&i.to_string()), c, mode))
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
        let mut x = self
            .embeddings
            .forward_embeds(inputs_embeds, token_type_ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, attention_mask)?;
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
#[derive(Debug, Clone)]
pub struct MaskedLmHead {
    dense: Linear,
    activation: Activation,
    layer_norm: LayerNorm,
    decoder_weight: Tensor,
    bias: Tensor,
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
            decoder_weight: word_embeddings.clone(),
            bias: l.get("bias", &[c.vocab_size], crate::params::Init::Zeros)?,
        })
    }

    /// Vocabulary logits (…, V) for hidden states (…, H).
    pub fn forward(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let x = self
            .layer_norm
            .forward(&self.activation.forward(&self.dense.forward(hidden)?)?)?;
        let dims = x.dims().to_vec();
        let h = dims[dims.len() - 1];
        let rows = x.elem_count() / h;
        let logits = x
            .reshape((rows, h))?
            .matmul(&self.decoder_weight.t()?)?
            .broadcast_add(&self.bias)?;
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = self.bias.dim(0)?;
        logits.reshape(out_dims)
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
