//! Prompt tuning and prefix tuning as PEFT arranges them, through the attention blocks' key/value prefix slots
//! and the position tables' offsets: the real tokens sit at positions `P..`, every layer's queries see `P`
//! learned keys and values first, and the prefix is never padding — what transformers computes with a
//! `past_key_values` of length `P` (prefix tuning) or with `P` virtual tokens in front of a causal LM's input
//! (prompt tuning: a virtual token only sees virtual tokens, so its keys and values per layer are a prefix).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Tensor, Var};
use mosaic_models::dropout::Mode;
use mosaic_models::folder::{save_safetensors, write_atomic};
use mosaic_models::layers::{
    AdapterFiles, AttentionEntry, KvCache, KvPrefix, Linear, Slot, WeightLayout,
};
use mosaic_models::params::Checkpoint;
use mosaic_models::{Gpt2, ModelError, ParamStore};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::config::ADAPTER_CONFIG;
use crate::error::{PeftError, Result};
use crate::files::ADAPTER_WEIGHTS;
use crate::prompt_config::{PromptConfig, PromptInit, PromptMethod};

/// The tensor name PEFT saves prompt-learning weights under.
pub const PROMPT_EMBEDDINGS: &str = "prompt_embeddings";

/// A causal LM's side of prompt tuning: its token embeddings, and the keys and values its layers give `P`
/// virtual tokens run as the first tokens of a sequence.
pub trait VirtualTokens: std::fmt::Debug + Send + Sync {
    /// `(vocab, hidden)`.
    fn word_embeddings(&self) -> Tensor;
    /// `embeds: (1, P, hidden)` -> per layer `(keys, values)`, each `(1, heads, P, head_dim)`.
    fn encode(&self, embeds: &Tensor) -> candle_core::Result<Vec<(Tensor, Tensor)>>;
}

/// GPT-2 as [`VirtualTokens`].
#[derive(Debug)]
pub struct Gpt2VirtualTokens(pub mosaic_models::gpt2::Gpt2Model);

impl Gpt2VirtualTokens {
    pub fn shared(model: &Gpt2) -> Arc<dyn VirtualTokens> {
        Arc::new(Gpt2VirtualTokens(model.transformer.clone()))
    }
}

impl VirtualTokens for Gpt2VirtualTokens {
    fn word_embeddings(&self) -> Tensor {
        self.0.wte.weight().clone()
    }

    fn encode(&self, embeds: &Tensor) -> candle_core::Result<Vec<(Tensor, Tensor)>> {
        let layers = self.0.num_layers();
        let mut cache = KvCache::with_gradients(layers);
        self.0
            .forward_embeds(embeds, None, None, Some(&mut cache))?;
        (0..layers)
            .map(|l| {
                cache
                    .layer(l)
                    .ok_or_else(|| candle_core::Error::Msg(format!("no keys for layer {l}")))
            })
            .collect()
    }
}

/// PEFT's `PrefixEncoder` MLP (`transform.0`, tanh, `transform.2`), used while training with
/// `prefix_projection`.
#[derive(Debug)]
struct Projection {
    first: Linear,
    second: Linear,
    vars: Vec<(String, Var)>,
}

/// Prompt tuning or prefix tuning attached to a model.
#[derive(Debug)]
pub struct PromptLearning {
    config: PromptConfig,
    /// `(P, hidden)` for prompt tuning and projected prefix tuning, `(P, layers · 2 · hidden)` otherwise.
    embedding: Var,
    projection: Option<Projection>,
    attentions: Vec<AttentionEntry>,
    offsets: Vec<Slot<usize>>,
    /// An encoder's input slot for virtual tokens (prompt tuning on BERT).
    inputs: Vec<Slot<Tensor>>,
    /// `modules_to_save` parameters by store name.
    saved: Vec<(String, Var)>,
    virtual_tokens: Option<Arc<dyn VirtualTokens>>,
    mode: Arc<Mode>,
    store: ParamStore,
}

/// The key PEFT saves a prompt-learning model's whole-saved module parameter under.
fn saved_key(name: &str) -> String {
    format!("base_model.{name}")
}

fn uniform(rng: &mut StdRng, n: usize, bound: f64) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect()
}

fn normal(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

impl PromptLearning {
    /// The model's sizes as a prompt config needs them: `(layers, heads, hidden)` of its attention blocks.
    pub fn model_sizes(store: &ParamStore) -> Result<(usize, usize, usize)> {
        let attentions = store.attentions();
        let Some((_, first)) = attentions.first() else {
            return Err(PeftError::Invalid(
                "prompt learning needs a model with attention blocks".into(),
            ));
        };
        Ok((attentions.len(), first.heads, first.heads * first.head_dim))
    }

    /// Attaches fresh virtual tokens (drawn with `seed`, or from `init_ids`' token embeddings for a text init).
    /// Prompt tuning needs `virtual_tokens` (a causal LM); prefix tuning works on any model with attention.
    pub fn apply(
        store: &ParamStore,
        mode: Arc<Mode>,
        config: PromptConfig,
        virtual_tokens: Option<Arc<dyn VirtualTokens>>,
        init_ids: Option<&[u32]>,
        seed: u64,
    ) -> Result<Self> {
        let (layers, heads, hidden) = Self::model_sizes(store)?;
        let p = config.num_virtual_tokens;
        if p == 0 {
            return Err(PeftError::Invalid(
                "num_virtual_tokens must be at least 1".into(),
            ));
        }
        let device = store
            .all()
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let mut rng = StdRng::seed_from_u64(seed);
        let (embedding, projection) = match &config.method {
            PromptMethod::PromptTuning { init } => {
                let words = match &virtual_tokens {
                    Some(vt) => vt.word_embeddings(),
                    None if !store.input_prompts().is_empty() => store
                        .all()
                        .into_iter()
                        .find(|(n, _)| n.ends_with("word_embeddings.weight"))
                        .map(|(_, v)| v.as_tensor().clone())
                        .ok_or_else(|| {
                            PeftError::Invalid("the model has no word embeddings".into())
                        })?,
                    None => {
                        return Err(PeftError::Invalid(
                            "prompt tuning is supported on GPT-2 and BERT models".into(),
                        ));
                    }
                };
                let table = match (init, init_ids) {
                    (PromptInit::Text(_), Some(ids)) if !ids.is_empty() => {
                        let ids: Vec<u32> = ids.iter().cycle().take(p).copied().collect();
                        let ids = Tensor::new(ids, &device)?;
                        words.index_select(&ids, 0)?.copy()?
                    }
                    (PromptInit::Text(_), _) => {
                        return Err(PeftError::Invalid(
                            "prompt tuning init from text: the text has no tokens".into(),
                        ));
                    }
                    (PromptInit::Random, _) => {
                        Tensor::from_vec(normal(&mut rng, p * hidden), (p, hidden), &device)?
                    }
                };
                (Var::from_tensor(&table)?, None)
            }
            PromptMethod::PrefixTuning {
                prefix_projection: true,
                encoder_hidden_size,
            } => {
                let e = *encoder_hidden_size;
                let out = layers * 2 * hidden;
                let embedding = Var::from_tensor(&Tensor::from_vec(
                    normal(&mut rng, p * hidden),
                    (p, hidden),
                    &device,
                )?)?;
                let mut vars = Vec::new();
                let mut linear = |name: &str, i: usize, o: usize| -> Result<Linear> {
                    let bound = 1.0 / (i as f64).sqrt();
                    let w = Var::from_tensor(&Tensor::from_vec(
                        uniform(&mut rng, o * i, bound),
                        (o, i),
                        &device,
                    )?)?;
                    let b = Var::from_tensor(&Tensor::from_vec(
                        uniform(&mut rng, o, bound),
                        o,
                        &device,
                    )?)?;
                    vars.push((format!("prompt_encoder.{name}.weight"), w.clone()));
                    vars.push((format!("prompt_encoder.{name}.bias"), b.clone()));
                    Ok(Linear::from_weights(
                        w.as_tensor().clone(),
                        Some(b.as_tensor().clone()),
                        WeightLayout::OutIn,
                    ))
                };
                let first = linear("transform.0", hidden, e)?;
                let second = linear("transform.2", e, out)?;
                (
                    embedding,
                    Some(Projection {
                        first,
                        second,
                        vars,
                    }),
                )
            }
            PromptMethod::PrefixTuning { .. } => {
                let width = layers * 2 * hidden;
                let t = Tensor::from_vec(normal(&mut rng, p * width), (p, width), &device)?;
                (Var::from_tensor(&t)?, None)
            }
        };
        let config = PromptConfig {
            num_layers: layers,
            num_attention_heads: heads,
            token_dim: hidden,
            ..config
        };
        Self::attach(store, mode, config, embedding, projection, virtual_tokens)
    }

    fn attach(
        store: &ParamStore,
        mode: Arc<Mode>,
        config: PromptConfig,
        embedding: Var,
        projection: Option<Projection>,
        virtual_tokens: Option<Arc<dyn VirtualTokens>>,
    ) -> Result<Self> {
        let attentions: Vec<AttentionEntry> =
            store.attentions().into_iter().map(|(_, e)| e).collect();
        if attentions.iter().any(|a| a.prefix.get().is_some()) {
            return Err(PeftError::Invalid(
                "the model already has a key/value prefix".into(),
            ));
        }
        let saved = crate::lora::saved_params(store, &config.modules_to_save);
        store.insert("prompt_encoder.embedding.weight", embedding.clone());
        if let Some(p) = &projection {
            for (name, var) in &p.vars {
                store.insert(name, var.clone());
            }
        }
        let learning = PromptLearning {
            config,
            embedding,
            projection,
            attentions,
            offsets: store
                .position_offsets()
                .into_iter()
                .map(|(_, s)| s)
                .collect(),
            inputs: store.input_prompts().into_iter().map(|(_, s)| s).collect(),
            saved,
            virtual_tokens,
            mode,
            store: store.clone(),
        };
        learning.refresh()?;
        learning.mark_store();
        Ok(learning)
    }

    /// Marks the store adapted: saving the model writes these files.
    fn mark_store(&self) {
        self.store.set_adapter_files(Some(Arc::new(PromptFiles {
            config: self.config.to_json(),
            embedding: self.embedding.clone(),
            projection: self
                .projection
                .as_ref()
                .map(|p| (p.first.clone(), p.second.clone())),
            saved: self.saved.clone(),
        })));
    }

    /// Records `base` as the base model the adapter is saved for (`base_model_name_or_path`).
    pub fn set_base_model(&mut self, base: String) {
        self.config.base_model = Some(base);
        self.mark_store();
    }

    pub fn config(&self) -> &PromptConfig {
        &self.config
    }

    /// What trains: the virtual tokens (and the projection MLP while it is used).
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let mut out = vec![(
            "prompt_encoder.embedding.weight".to_string(),
            self.embedding.clone(),
        )];
        if let Some(p) = &self.projection {
            out.extend(p.vars.iter().cloned());
        }
        out.extend(self.saved.iter().cloned());
        out
    }

    /// Recomputes every layer's prefix from the current parameters (after each optimizer step): a projected
    /// prefix and prompt tuning's keys and values are functions of them. Prompt tuning runs its virtual tokens
    /// in eval mode, so the prefix a validation sees has no dropout in it.
    pub fn refresh(&self) -> Result<()> {
        let p = self.config.num_virtual_tokens;
        let per_layer: Vec<(Tensor, Tensor)> = match (&self.config.method, &self.virtual_tokens) {
            (PromptMethod::PromptTuning { .. }, Some(vt)) => {
                self.clear();
                let training = self.mode.is_training();
                self.mode.set_training(false);
                let encoded = vt.encode(&self.embedding.as_tensor().unsqueeze(0)?);
                self.mode.set_training(training);
                encoded?
            }
            (PromptMethod::PromptTuning { .. }, None) => {
                // An encoder: the virtual tokens go into its input, and its sequence grows by P.
                let Some(input) = self.inputs.first() else {
                    return Err(PeftError::Invalid(
                        "prompt tuning needs a causal LM or an encoder with an input prompt slot"
                            .into(),
                    ));
                };
                input.set(Some(self.embedding.as_tensor().clone()));
                return Ok(());
            }
            (PromptMethod::PrefixTuning { .. }, _) => {
                let kv = match &self.projection {
                    Some(mlp) => mlp
                        .second
                        .forward(&mlp.first.forward(self.embedding.as_tensor())?.tanh()?)?,
                    None => self.embedding.as_tensor().clone(),
                };
                let (layers, heads) = (self.config.num_layers, self.config.num_attention_heads);
                let head_dim = self.config.token_dim / heads.max(1);
                // PEFT: (P, layers · 2 · hidden) viewed as (P, layers, 2, heads, head_dim); layer l's keys are
                // [:, l, 0], its values [:, l, 1], each as (1, heads, P, head_dim).
                let kv = kv.reshape((p, layers, 2, heads, head_dim))?;
                let part = |l: usize, which: usize| -> candle_core::Result<Tensor> {
                    kv.narrow(1, l, 1)?
                        .narrow(2, which, 1)?
                        .reshape((p, heads, head_dim))?
                        .transpose(0, 1)?
                        .unsqueeze(0)
                };
                (0..layers)
                    .map(|l| Ok((part(l, 0)?, part(l, 1)?)))
                    .collect::<candle_core::Result<_>>()?
            }
        };
        for (entry, (keys, values)) in self.attentions.iter().zip(per_layer) {
            entry.prefix.set(Some(KvPrefix { keys, values }));
        }
        for offset in &self.offsets {
            offset.set(Some(p));
        }
        Ok(())
    }

    fn clear(&self) {
        for input in &self.inputs {
            input.set(None);
        }
        for entry in &self.attentions {
            entry.prefix.set(None);
        }
        for offset in &self.offsets {
            offset.set(None);
        }
    }

    /// Takes the virtual tokens out: the model is the base model again.
    pub fn unload(self) {
        self.clear();
        for (name, _) in self.trainable() {
            if !self.saved.iter().any(|(s, _)| *s == name) {
                self.store.remove(&name);
            }
        }
        self.store.set_adapter_files(None);
    }

    /// Applies the prompt-learning adapter saved in `dir` (by PEFT or by mosaic). A prefix saved with
    /// `prefix_projection` holds the projected keys and values, so it loads as a plain prefix.
    pub fn load(
        store: &ParamStore,
        mode: Arc<Mode>,
        dir: &Path,
        virtual_tokens: Option<Arc<dyn VirtualTokens>>,
    ) -> Result<Self> {
        let config_path = dir.join(ADAPTER_CONFIG);
        let v = crate::config::read_json(&config_path)?;
        let config = PromptConfig::from_json(&v).map_err(|m| PeftError::file(&config_path, m))?;
        let (layers, heads, hidden) = Self::model_sizes(store)?;
        if (
            config.num_layers,
            config.num_attention_heads,
            config.token_dim,
        ) != (layers, heads, hidden)
        {
            return Err(PeftError::file(
                &config_path,
                format!(
                    "made for a model with {} layers, {} heads, width {}; this model has {layers}, {heads}, {hidden}",
                    config.num_layers, config.num_attention_heads, config.token_dim
                ),
            ));
        }
        let path = dir.join(ADAPTER_WEIGHTS);
        let device = store
            .all()
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let file = Checkpoint::read(&path, &device)?;
        let tensor = file
            .load(PROMPT_EMBEDDINGS)?
            .ok_or_else(|| PeftError::file(&path, format!("no tensor `{PROMPT_EMBEDDINGS}`")))?;
        let p = config.num_virtual_tokens;
        let expected = match config.method {
            PromptMethod::PromptTuning { .. } => [p, hidden],
            PromptMethod::PrefixTuning { .. } => [p, layers * 2 * hidden],
        };
        if tensor.dims() != expected {
            return Err(PeftError::file(
                &path,
                format!(
                    "tensor `{PROMPT_EMBEDDINGS}` has shape {:?} but this model needs {expected:?}: the adapter was made for another base model",
                    tensor.dims()
                ),
            ));
        }
        let config = match config.method {
            PromptMethod::PrefixTuning { .. } => PromptConfig {
                method: PromptMethod::PrefixTuning {
                    prefix_projection: false,
                    encoder_hidden_size: 0,
                },
                ..config
            },
            _ => config,
        };
        let embedding = Var::from_tensor(&tensor.to_dtype(DType::F32)?)?;
        let learning = Self::attach(store, mode, config, embedding, None, virtual_tokens)?;
        let mut unused: Vec<String> = file
            .names()
            .filter(|n| *n != PROMPT_EMBEDDINGS)
            .map(str::to_string)
            .collect();
        for (name, var) in &learning.saved {
            let key = saved_key(name);
            let Some(t) = file.load(&key)? else { continue };
            if t.dims() != var.dims() {
                return Err(PeftError::file(
                    &path,
                    format!(
                        "tensor `{key}` has shape {:?} but the model's is {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&t.to_dtype(DType::F32)?)?;
            unused.retain(|u| *u != key);
        }
        if let Some(key) = unused.first() {
            return Err(PeftError::file(
                &path,
                format!(
                    "tensor `{key}` has no place in this model: the adapter was made for another base model or task"
                ),
            ));
        }
        Ok(learning)
    }
}

/// What saving a prompt-learned model writes: `prompt_embeddings` (projected, when a projection trains, as
/// PEFT saves it) and the config.
#[derive(Debug)]
struct PromptFiles {
    config: serde_json::Value,
    embedding: Var,
    projection: Option<(Linear, Linear)>,
    saved: Vec<(String, Var)>,
}

impl AdapterFiles for PromptFiles {
    fn save(&self, dir: &Path) -> mosaic_models::Result<()> {
        let weights = match &self.projection {
            Some((first, second)) => {
                let _no_graph = mosaic_models::NoGradGuard::new();
                second.forward(&first.forward(self.embedding.as_tensor())?.tanh()?)?
            }
            None => self.embedding.as_tensor().clone(),
        };
        let mut config = self.config.clone();
        if self.projection.is_some() {
            // Saved projected: PEFT then loads it in inference mode straight into its embedding.
            config["inference_mode"] = true.into();
        }
        let mut tensors = HashMap::from([(PROMPT_EMBEDDINGS.to_string(), weights)]);
        for (name, var) in &self.saved {
            tensors.insert(saved_key(name), var.as_tensor().clone());
        }
        save_safetensors(&tensors, &dir.join(ADAPTER_WEIGHTS))?;
        let json = serde_json::to_string_pretty(&config).map_err(|e| {
            ModelError::Unsupported(format!("cannot serialise {ADAPTER_CONFIG}: {e}"))
        })?;
        write_atomic(&dir.join(ADAPTER_CONFIG), json.as_bytes())
    }
}
