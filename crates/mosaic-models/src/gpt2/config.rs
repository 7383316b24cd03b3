//! `config.json` of a GPT-2 model, as Hugging Face's `GPT2Config` writes it.

use std::path::Path;

use serde::Deserialize;

use crate::error::Result;
use crate::hf_config;
use crate::layers::Activation;

/// The fields of a GPT-2 `config.json` that shape the network. Unknown fields are kept in `raw` and written back.
#[derive(Debug, Clone)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    /// The context: the number of learned positions.
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// The MLP width; HF's `n_inner: null` means `4 * n_embd`.
    pub n_inner: usize,
    pub activation_function: String,
    pub resid_pdrop: f64,
    pub embd_pdrop: f64,
    pub attn_pdrop: f64,
    pub layer_norm_epsilon: f64,
    pub initializer_range: f64,
    /// Scale attention scores by `1/sqrt(head_dim)` (HF default true).
    pub scale_attn_weights: bool,
    /// Further divide the scores of layer `i` by `i + 1` (HF default false).
    pub scale_attn_by_inverse_layer_idx: bool,
    /// The LM head shares the token embedding matrix (HF default true).
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// One id or several (HF accepts an int or a list).
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub architectures: Vec<String>,
    /// The whole JSON object as read, so saving keeps what we do not model.
    pub raw: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawGpt2 {
    model_type: Option<String>,
    #[serde(default = "default_vocab")]
    vocab_size: usize,
    #[serde(default = "default_positions")]
    n_positions: usize,
    #[serde(default = "default_embd")]
    n_embd: usize,
    #[serde(default = "default_layers")]
    n_layer: usize,
    #[serde(default = "default_layers")]
    n_head: usize,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default = "default_act")]
    activation_function: String,
    #[serde(default = "default_dropout")]
    resid_pdrop: f64,
    #[serde(default = "default_dropout")]
    embd_pdrop: f64,
    #[serde(default = "default_dropout")]
    attn_pdrop: f64,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_init")]
    initializer_range: f64,
    #[serde(default = "default_true")]
    scale_attn_weights: bool,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
    #[serde(default)]
    add_cross_attention: bool,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
}

fn default_vocab() -> usize {
    50257
}
fn default_positions() -> usize {
    1024
}
fn default_embd() -> usize {
    768
}
fn default_layers() -> usize {
    12
}
fn default_act() -> String {
    "gelu_new".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-5
}
fn default_init() -> f64 {
    0.02
}
fn default_true() -> bool {
    true
}

/// The HF class our GPT-2 is saved as.
pub const GPT2_ARCHITECTURE: &str = "GPT2LMHeadModel";

impl Gpt2Config {
    /// Reads and validates `config.json`.
    pub fn read(path: &Path) -> Result<Self> {
        Self::parse(&hf_config::read_text(path)?, path)
    }

    /// Parses the text of a `config.json`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = hf_config::malformed(path);
        let raw = hf_config::parse_object(text, path)?;
        // Old GPT-2 configs name the context `n_ctx`; newer ones keep both.
        let mut normalised = raw.clone();
        if !normalised.contains_key("n_positions")
            && let Some(n_ctx) = raw.get("n_ctx")
        {
            normalised.insert("n_positions".into(), n_ctx.clone());
        }
        let parsed: RawGpt2 = hf_config::fields(normalised, path)?;
        hf_config::check_model_type(path, parsed.model_type.as_deref(), "gpt2")?;
        if parsed.add_cross_attention {
            return Err(bad(
                "key `add_cross_attention`: cross-attention GPT-2 (encoder-decoder) is not supported".into(),
            ));
        }
        hf_config::require_activation("activation_function", &parsed.activation_function)
            .map_err(bad)?;
        hf_config::require_positive(&[
            ("vocab_size", parsed.vocab_size),
            ("n_positions", parsed.n_positions),
            ("n_embd", parsed.n_embd),
            ("n_head", parsed.n_head),
            ("n_inner", parsed.n_inner.unwrap_or(1)),
        ])
        .map_err(bad)?;
        if !parsed.n_embd.is_multiple_of(parsed.n_head) {
            return Err(bad(format!(
                "key `n_embd` ({}) is not a multiple of `n_head` ({})",
                parsed.n_embd, parsed.n_head
            )));
        }
        for (key, p) in [
            ("resid_pdrop", parsed.resid_pdrop),
            ("embd_pdrop", parsed.embd_pdrop),
            ("attn_pdrop", parsed.attn_pdrop),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(bad(format!("key `{key}` must be in [0, 1), got {p}")));
            }
        }
        let eos_token_ids = match &parsed.eos_token_id {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(v) => token_ids(v).ok_or_else(|| {
                bad(format!(
                    "key `eos_token_id`: expected a token id or a list of ids, got {v}"
                ))
            })?,
        };
        Ok(Gpt2Config {
            vocab_size: parsed.vocab_size,
            n_positions: parsed.n_positions,
            n_embd: parsed.n_embd,
            n_layer: parsed.n_layer,
            n_head: parsed.n_head,
            n_inner: parsed.n_inner.unwrap_or(4 * parsed.n_embd),
            activation_function: parsed.activation_function,
            resid_pdrop: parsed.resid_pdrop,
            embd_pdrop: parsed.embd_pdrop,
            attn_pdrop: parsed.attn_pdrop,
            layer_norm_epsilon: parsed.layer_norm_epsilon,
            initializer_range: parsed.initializer_range,
            scale_attn_weights: parsed.scale_attn_weights,
            scale_attn_by_inverse_layer_idx: parsed.scale_attn_by_inverse_layer_idx,
            tie_word_embeddings: parsed.tie_word_embeddings,
            bos_token_id: parsed.bos_token_id,
            eos_token_ids,
            pad_token_id: parsed.pad_token_id,
            architectures: parsed.architectures.unwrap_or_default(),
            raw,
        })
    }

    /// The config as JSON: what was read, with every modelled field written from this struct (so a changed
    /// field is saved, and HF's defaults never have to be guessed by a reader).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let mut raw = self.raw.clone();
        let eos = match self.eos_token_ids.as_slice() {
            [] => serde_json::Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        for (key, value) in [
            ("architectures", json!([GPT2_ARCHITECTURE])),
            ("model_type", json!("gpt2")),
            ("vocab_size", json!(self.vocab_size)),
            ("n_positions", json!(self.n_positions)),
            ("n_embd", json!(self.n_embd)),
            ("n_layer", json!(self.n_layer)),
            ("n_head", json!(self.n_head)),
            ("n_inner", json!(self.n_inner)),
            ("activation_function", json!(self.activation_function)),
            ("resid_pdrop", json!(self.resid_pdrop)),
            ("embd_pdrop", json!(self.embd_pdrop)),
            ("attn_pdrop", json!(self.attn_pdrop)),
            ("layer_norm_epsilon", json!(self.layer_norm_epsilon)),
            ("initializer_range", json!(self.initializer_range)),
            ("scale_attn_weights", json!(self.scale_attn_weights)),
            (
                "scale_attn_by_inverse_layer_idx",
                json!(self.scale_attn_by_inverse_layer_idx),
            ),
            ("tie_word_embeddings", json!(self.tie_word_embeddings)),
            ("bos_token_id", json!(self.bos_token_id)),
            ("eos_token_id", eos),
            ("pad_token_id", json!(self.pad_token_id)),
        ] {
            raw.insert(key.into(), value);
        }
        // `n_ctx` of old configs would otherwise contradict a changed `n_positions`.
        if raw.contains_key("n_ctx") {
            raw.insert("n_ctx".into(), json!(self.n_positions));
        }
        serde_json::Value::Object(raw)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    pub fn activation(&self) -> Activation {
        Activation::from_hf(&self.activation_function).unwrap_or(Activation::GeluTanh)
    }
}

fn token_ids(v: &serde_json::Value) -> Option<Vec<u32>> {
    match v {
        serde_json::Value::Number(n) => Some(vec![u32::try_from(n.as_u64()?).ok()?]),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| u32::try_from(i.as_u64()?).ok())
            .collect(),
        _ => None,
    }
}
