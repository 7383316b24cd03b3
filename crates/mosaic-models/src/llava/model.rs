//! `LlavaForConditionalGeneration`: the CLIP vision tower, the projector and the GPT-2 language model, under
//! transformers' in-memory names (`model.vision_tower.*`, `model.multi_modal_projector.*`,
//! `model.language_model.*`, `lm_head.weight` — what PEFT names adapters by); folders are read in either layout
//! transformers uses and written in the file layout `save_pretrained` writes.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::config::{FeatureLayers, FeatureSelect, LlavaConfig, ProjectorKind};
use crate::clip::ClipVisionTransformer;
use crate::dropout::Mode;
use crate::error::{ModelError, Result};
use crate::folder::{open_model, save_model_as};
use crate::gpt2::{Gpt2, TokenLayout, causal_lm_loss_sum};
use crate::layers::{Activation, Linear, LinearKind};
use crate::params::{Checkpoint, ParamLoader, ParamStore};

pub(crate) const VISION: &str = "model.vision_tower";
pub(crate) const PROJECTOR: &str = "model.multi_modal_projector";
pub(crate) const LANGUAGE: &str = "model.language_model";
pub(crate) const LM_HEAD: &str = "lm_head";

/// In-memory prefix → the prefix `save_pretrained` writes (the first) and the others found in folders.
const LAYOUTS: &[(&str, &[&str])] = &[
    (
        "model.vision_tower.",
        &[
            "vision_tower.",
            "vision_tower.vision_model.",
            "model.vision_tower.vision_model.",
        ],
    ),
    ("model.multi_modal_projector.", &["multi_modal_projector."]),
    (
        "model.language_model.",
        &["language_model.model.", "language_model.transformer."],
    ),
    ("lm_head.", &["language_model.lm_head."]),
];

/// The name `save_pretrained` gives the parameter `name` (an in-memory name).
pub fn file_layout_name(name: &str) -> String {
    for (ours, files) in LAYOUTS {
        if let Some(rest) = name.strip_prefix(ours) {
            return format!("{}{rest}", files[0]);
        }
    }
    name.to_string()
}

/// HF's `LlavaMultiModalProjector` (or a single linear layer).
#[derive(Debug, Clone)]
pub struct LlavaProjector {
    linear_1: Linear,
    act: Activation,
    linear_2: Option<Linear>,
}

impl LlavaProjector {
    fn load(l: &ParamLoader, c: &LlavaConfig) -> Result<Self> {
        let (i, h, std) = (c.projector_input(), c.text.n_embd, c.text.initializer_range);
        let kind = if c.projector_bias {
            LinearKind::Linear
        } else {
            LinearKind::NoBias
        };
        let linear_1 = Linear::load_as(&l.pp("linear_1"), i, h, std, kind)?;
        let linear_2 = match c.projector {
            ProjectorKind::Mlp => Some(Linear::load_as(&l.pp("linear_2"), h, h, std, kind)?),
            ProjectorKind::Linear => None,
        };
        Ok(LlavaProjector {
            linear_1,
            act: c.projector_hidden_act,
            linear_2,
        })
    }

    /// Vision features `(…, projector input)` → language-model embeddings `(…, n_embd)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.linear_1.forward(x)?;
        match &self.linear_2 {
            Some(linear_2) => linear_2.forward(&self.act.forward(&x)?),
            None => Ok(x),
        }
    }
}

/// A LLaVA with its parameters and its train/eval mode.
pub struct Llava {
    pub config: LlavaConfig,
    pub vision_tower: ClipVisionTransformer,
    pub projector: LlavaProjector,
    /// The language model; its `params` is this whole model's store (one store, so adapters see every layer).
    pub language_model: Gpt2,
    pub params: ParamStore,
    pub mode: Arc<Mode>,
}

impl Llava {
    /// Loads a `LlavaForConditionalGeneration` folder saved in either of transformers' layouts.
    pub fn from_folder(dir: &Path, seed: u64, device: &Device) -> Result<Self> {
        let (folder, checkpoint) = open_model(dir, device)?;
        let config = LlavaConfig::read(&folder.config())?;
        Self::build(config, checkpoint, seed, device)
    }

    /// A randomly initialised model (projector and towers alike).
    pub fn new(config: LlavaConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::build(config, Checkpoint::default(), seed, device)
    }

    fn build(
        config: LlavaConfig,
        checkpoint: Checkpoint,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let store = ParamStore::new();
        let mut loader = ParamLoader::for_checkpoint(checkpoint, store.clone(), seed, device);
        for (ours, files) in LAYOUTS {
            for file in *files {
                loader = loader.alias(ours, file);
            }
        }
        let mode = Mode::seeded(seed);
        let vision_tower = ClipVisionTransformer::load(&loader.pp(VISION), &config.vision, &mode)?;
        let projector = LlavaProjector::load(&loader.pp(PROJECTOR), &config)?;
        let mut text = config.text.clone();
        text.tie_word_embeddings = config.tie_word_embeddings;
        let language_model = Gpt2::assemble(
            text,
            &loader.pp(LANGUAGE),
            &loader.pp(LM_HEAD),
            mode.clone(),
        )?;
        Ok(Llava {
            config,
            vision_tower,
            projector,
            language_model,
            params: store,
            mode,
        })
    }

    /// Training mode turns dropout on.
    pub fn set_training(&self, training: bool) {
        self.mode.set_training(training)
    }

    pub fn device(&self) -> Device {
        self.language_model
            .transformer
            .wte
            .weight()
            .device()
            .clone()
    }

    /// Projected image features `(N, features, n_embd)` of `(N, C, S, S)` pixel values: HF's
    /// `get_image_features` (the chosen vision layers, the class token dropped under `"default"`).
    pub fn image_features(&self, pixel_values: &Tensor) -> Result<Tensor> {
        // Only the layers up to the deepest one read (HF runs them all; the rest cannot change the features).
        let all = self.vision_tower.num_layers() as i64 + 1;
        let deepest = self
            .config
            .feature_layers
            .indices()
            .iter()
            .map(|&i| if i < 0 { all + i } else { i })
            .max()
            .unwrap_or(all - 1)
            .clamp(0, all - 1);
        let states = &self
            .vision_tower
            .hidden_states(pixel_values, deepest as usize)?;
        let pick = |i: i64| -> Result<Tensor> {
            let index = if i < 0 { all + i } else { i };
            let state = usize::try_from(index)
                .ok()
                .and_then(|i| states.get(i))
                .ok_or_else(|| {
                    ModelError::InvalidInput(format!(
                        "vision_feature_layer {i}: the vision tower has {all} hidden states"
                    ))
                })?;
            Ok(match self.config.feature_select {
                FeatureSelect::Default => state.narrow(1, 1, state.dim(1)? - 1)?,
                FeatureSelect::Full => state.clone(),
            })
        };
        let selected = match &self.config.feature_layers {
            FeatureLayers::One(i) => pick(*i)?,
            FeatureLayers::Many(layers) => {
                let parts = layers
                    .iter()
                    .map(|&i| pick(i))
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&parts, 2)?
            }
        };
        Ok(self.projector.forward(&selected)?)
    }

    /// The language model's input embeddings `(B, T, n_embd)`: the token embeddings of `input_ids` `(B, T)`,
    /// with the `<image>` positions replaced, in order, by the rows of `image_features` `(N, F, n_embd)`.
    /// Row `b` holds `images_per_row[b]` images and must carry exactly that many times `F` image tokens.
    pub fn inputs_embeds(
        &self,
        input_ids: &Tensor,
        image_features: Option<&Tensor>,
        images_per_row: &[usize],
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let image_token = self.config.image_token_index;
        let (n, f) = match image_features {
            Some(features) => {
                let (n, f, _) = features.dims3()?;
                (n, f)
            }
            None => (0, 0),
        };
        if images_per_row.len() != b {
            return Err(ModelError::InvalidInput(format!(
                "{} image counts for a batch of {b} samples",
                images_per_row.len()
            )));
        }
        let wanted: usize = images_per_row.iter().sum();
        if wanted != n {
            return Err(ModelError::InvalidInput(format!(
                "the samples have {wanted} images but {n} were encoded"
            )));
        }
        for (row, (ids, &images)) in ids.iter().zip(images_per_row).enumerate() {
            let tokens = ids.iter().filter(|&&id| id == image_token).count();
            if tokens != images * f {
                return Err(ModelError::InvalidInput(format!(
                    "sample {row}: {tokens} image tokens, but its {images} image(s) give {} features",
                    images * f
                )));
            }
        }
        // The placeholder id may lie outside the embedding table (its row is replaced anyway).
        let text_ids: Vec<u32> = ids
            .iter()
            .flatten()
            .map(|&id| if id == image_token { 0 } else { id })
            .collect();
        let text_ids = Tensor::from_vec(text_ids, (b, t), input_ids.device())?;
        let embeds = self.language_model.transformer.wte.forward(&text_ids)?;
        let Some(features) = image_features.filter(|_| n > 0) else {
            return Ok(embeds);
        };
        let h = embeds.dim(2)?;
        // One gather from [token embeddings; image features]: position p takes row p, or the next feature row.
        let table = Tensor::cat(
            &[&embeds.reshape((b * t, h))?, &features.reshape((n * f, h))?],
            0,
        )?;
        let mut next = (b * t) as u32;
        let index: Vec<u32> = ids
            .iter()
            .flatten()
            .enumerate()
            .map(|(p, &id)| {
                if id == image_token {
                    next += 1;
                    next - 1
                } else {
                    p as u32
                }
            })
            .collect();
        let index = Tensor::from_vec(index, b * t, input_ids.device())?;
        Ok(table.index_select(&index, 0)?.reshape((b, t, h))?)
    }

    /// Logits `(B, T, V)` of a right-padded batch (`attention_mask` 1 = token); `pixel_values` `(N, C, S, S)`
    /// holds the images of all rows in order, `images_per_row` how many each row has.
    pub fn logits(
        &self,
        input_ids: &Tensor,
        pixel_values: Option<&Tensor>,
        images_per_row: &[usize],
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let features = pixel_values.map(|p| self.image_features(p)).transpose()?;
        let embeds = self.inputs_embeds(input_ids, features.as_ref(), images_per_row)?;
        let layout = TokenLayout {
            attention_mask,
            ..TokenLayout::default()
        };
        let hidden = self
            .language_model
            .transformer
            .forward_embeds_with_layout(&embeds, &layout, None)?;
        Ok(self.language_model.lm_logits(&hidden)?)
    }

    /// The causal-LM loss `(sum of token losses, counted tokens)`; `labels` `(B, T)` with −100 where the loss
    /// does not count (image positions, the prompt, padding).
    pub fn loss_sum(
        &self,
        input_ids: &Tensor,
        pixel_values: Option<&Tensor>,
        images_per_row: &[usize],
        attention_mask: Option<&Tensor>,
        labels: &Tensor,
    ) -> Result<(Tensor, usize)> {
        let logits = self.logits(input_ids, pixel_values, images_per_row, attention_mask)?;
        Ok(causal_lm_loss_sum(&logits, labels)?)
    }

    /// Writes `config.json` and `model.safetensors` (in transformers' file layout) into `dir`; while an adapter
    /// is attached, the adapter's files instead.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_model_as(dir, &self.params, &self.config.to_json(), file_layout_name)
    }
}
