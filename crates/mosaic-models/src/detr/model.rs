//! The whole `DetrForObjectDetection`: the HF ResNet backbone with frozen batch norms, the 1×1
//! `input_projection`, the sine position embeddings, the encoder-decoder and the class / box heads — loaded from
//! and saved to a Hugging Face folder under transformers' on-disk names (`DetrModel`, `DetrConvEncoder`,
//! `DetrMLPPredictionHead` and `DetrForObjectDetection` in `transformers/models/detr/modeling_detr.py`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::config::DetrConfig;
use super::position::FeatureMask;
use super::transformer::{DetrDecoder, DetrEncoder};
use crate::dropout::Mode;
use crate::error::{ModelError, Result};
use crate::folder::{open_model, param_tensors, save_model_tensors};
use crate::grad_mode::{param, set_frozen};
use crate::hf_config::replace_labels;
use crate::layers::{Linear, WeightLayout};
use crate::params::{Checkpoint, Init, ParamLoader, ParamStore};
use crate::resnet::{BufferLoader, BufferStore, ResNetModel, Scope};

/// Where the backbone's tensors live in the file: `model.backbone.conv_encoder.model.…` (transformers 5.x
/// renames `backbone.conv_encoder` to `backbone` in memory and back when saving; the file keeps the 4.x layout).
const BACKBONE: &str = "model.backbone.conv_encoder.model";
/// The head, replaced when the labels change.
const CLASSIFIER: &str = "class_labels_classifier";
/// The suffixes of a frozen batch norm's tensors; `num_batches_tracked` is dropped on load, as
/// `DetrFrozenBatchNorm2d._load_from_state_dict` does.
const FROZEN_NORM_SUFFIXES: [&str; 5] = [
    "normalization.weight",
    "normalization.bias",
    "normalization.running_mean",
    "normalization.running_var",
    "normalization.num_batches_tracked",
];

/// One set of predictions: `logits: [B, Q, labels + 1]` (the last class is "no object") and
/// `pred_boxes: [B, Q, 4]` as normalised `(cx, cy, w, h)` in `[0, 1]`.
#[derive(Debug, Clone)]
pub struct DetrPrediction {
    pub logits: Tensor,
    pub pred_boxes: Tensor,
}

/// What [`Detr::forward`] returns.
#[derive(Debug, Clone)]
pub struct DetrOutput {
    /// `[B, Q, labels + 1]`.
    pub logits: Tensor,
    /// `[B, Q, 4]`, `(cx, cy, w, h)` relative to the padded image, through a sigmoid.
    pub pred_boxes: Tensor,
    /// With `auxiliary_loss`: the heads on each decoder layer's layer-normed output but the last (transformers'
    /// `auxiliary_outputs`, decoder layers `0..L-1`); empty otherwise.
    pub auxiliary: Vec<DetrPrediction>,
    /// `[B, Q, d_model]`: the decoder's output, what the heads read.
    pub last_hidden_state: Tensor,
    /// `[B, h · w, d_model]`: the encoder's output over the feature map.
    pub encoder_last_hidden_state: Tensor,
}

/// `input_projection`: the 1×1 convolution (with bias) from the backbone's channels to `d_model`.
#[derive(Debug, Clone)]
struct InputProjection {
    /// `(d_model, channels, 1, 1)`.
    weight: Tensor,
    bias: Tensor,
}

impl InputProjection {
    /// `(B, C, h, w)` → `(B, h · w, d_model)`: a 1×1 convolution is a projection of each position's channels, so
    /// it runs as one [`Linear`] over the flattened map (the `flatten(2).transpose(1, 2)` transformers applies
    /// after the convolution).
    fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let (d, c, _, _) = self.weight.dims4()?;
        let rows = features.flatten_from(2)?.transpose(1, 2)?.contiguous()?;
        let weight = param(&self.weight).reshape((d, c))?;
        let projection = Linear::from_weights(weight, Some(param(&self.bias)), WeightLayout::OutIn);
        Ok(projection.forward(&rows)?)
    }
}

/// How the backbone's batch norms behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackboneNorms {
    /// `DetrFrozenBatchNorm2d`, as transformers builds every DETR: fixed affine weights and statistics. Right for
    /// a pretrained backbone, whose statistics mean something.
    Frozen,
    /// Ordinary `BatchNorm2d` (batch statistics and a running average in training, trainable weight and bias),
    /// for training from scratch: frozen at their fresh identity values the norms would leave the backbone an
    /// unnormalised convnet. They are saved under the same names (`weight`, `bias`, `running_mean`,
    /// `running_var`), so the saved folder loads as a standard DETR whose frozen norms hold the learnt values —
    /// the same function as this model in eval mode.
    Trainable,
}

/// A DETR with its heads, parameters, frozen buffers and train/eval mode.
pub struct Detr {
    pub config: DetrConfig,
    /// The ResNet, every batch norm a frozen one.
    pub backbone: ResNetModel,
    input_projection: InputProjection,
    /// `model.query_position_embeddings.weight`, `(num_queries, d_model)`.
    query_position_embeddings: Tensor,
    pub encoder: DetrEncoder,
    pub decoder: DetrDecoder,
    pub class_labels_classifier: Linear,
    /// `bbox_predictor.layers.{0,1,2}`: d → d → d → 4, ReLU between.
    pub bbox_predictor: Vec<Linear>,
    /// The parameters (the backbone's stem and first stage marked frozen, see [`Detr::frozen_by_default`]).
    pub params: ParamStore,
    /// The frozen batch norms' weight, bias, running mean and variance (saved, never trained).
    pub buffers: BufferStore,
    pub mode: Arc<Mode>,
}

impl Detr {
    /// Loads a folder. `labels`: class names for the classifier; when they differ from the folder's, a fresh
    /// `class_labels_classifier` of `labels.len() + 1` outputs is initialised with `seed`.
    pub fn from_folder(
        dir: &Path,
        labels: Option<&[String]>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let (folder, checkpoint) = open_model(dir, device)?;
        let mut config = DetrConfig::read(&folder.config())?;
        let mut new_head = false;
        if let Some(labels) = labels {
            new_head = labels != config.labels.as_slice();
            let saved = checkpoint.contains("class_labels_classifier.weight");
            let path = folder.config();
            replace_labels(
                &mut config.labels,
                labels.to_vec(),
                &path,
                saved,
                CLASSIFIER,
            );
        }
        Self::build(
            config,
            checkpoint,
            new_head,
            BackboneNorms::Frozen,
            seed,
            device,
        )
    }

    /// A randomly initialised model (linear layers and the query embeddings from N(0, init_std²), layer norms
    /// and frozen batch norms at identity, convolutions Kaiming-normal).
    pub fn new(config: DetrConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::new_with(config, BackboneNorms::Frozen, seed, device)
    }

    /// A randomly initialised model whose backbone batch norms are `norms`: [`BackboneNorms::Trainable`] for
    /// training from scratch (see there).
    pub fn new_with(
        config: DetrConfig,
        norms: BackboneNorms,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        Self::build(config, Checkpoint::default(), false, norms, seed, device)
    }

    fn build(
        config: DetrConfig,
        mut checkpoint: Checkpoint,
        new_head: bool,
        norms: BackboneNorms,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let fresh = checkpoint.is_empty();
        let classes = config.labels.len() + 1;
        let head_fits = !new_head
            && checkpoint
                .shape("class_labels_classifier.weight")
                .is_some_and(|w| w.first() == Some(&classes));
        if !head_fits {
            checkpoint.remove("class_labels_classifier.weight");
            checkpoint.remove("class_labels_classifier.bias");
        }
        // The frozen batch norms' tensors are buffers: they go to the buffer loader, the rest to the parameters.
        let frozen_names: Vec<String> = checkpoint
            .names()
            .filter(|k| {
                k.starts_with(BACKBONE) && FROZEN_NORM_SUFFIXES.iter().any(|s| k.ends_with(s))
            })
            .map(str::to_string)
            .collect();
        let mut buffer_tensors = HashMap::new();
        for name in frozen_names {
            if let Some(t) = checkpoint.take(&name)?
                && !name.ends_with("num_batches_tracked")
            {
                buffer_tensors.insert(name, t);
            }
        }
        let params = ParamStore::new();
        let buffers = BufferStore::new();
        let path = checkpoint.path.clone();
        let loader = ParamLoader::for_checkpoint(checkpoint, params.clone(), seed, device)
            .allow_new(&["class_labels_classifier."]);
        let buffer_loader = BufferLoader::new(buffer_tensors, fresh, path, buffers.clone(), device);
        let mode = Mode::seeded(seed);
        let d = config.d_model;
        let std = config.init_std;

        // DetrConvEncoder: the backbone with every BatchNorm2d replaced by DetrFrozenBatchNorm2d (kept as
        // BatchNorm2d when training from scratch, see `BackboneNorms::Trainable`).
        let scope = Scope::new(loader.clone(), BACKBONE, &buffer_loader, &mode);
        let scope = match norms {
            BackboneNorms::Frozen => scope.with_frozen_norms(),
            BackboneNorms::Trainable => scope,
        };
        let backbone = ResNetModel::load(&scope, &config.backbone)?;
        // DetrModel.__init__: query_position_embeddings, input_projection, encoder, decoder.
        let model = loader.pp("model");
        // A fresh model draws its queries from N(0, 1), as the original DETR's `nn.Embedding` does: at
        // transformers' `init_std` (0.02) every query starts almost the same, so every prediction is the same
        // mean box and the matching has nothing to tell apart (a from-scratch run then never leaves it).
        let query_position_embeddings = model.pp("query_position_embeddings").get(
            "weight",
            &[config.num_queries, d],
            Init::Normal(1.0),
        )?;
        let projection = model.pp("input_projection");
        let channels = config.backbone_channels();
        let input_projection = InputProjection {
            weight: projection.get("weight", &[d, channels, 1, 1], Init::Normal(std))?,
            bias: projection.get("bias", &[d], Init::Zeros)?,
        };
        let encoder = DetrEncoder::load(&model.pp("encoder"), &config, &mode)?;
        let decoder = DetrDecoder::load(&model.pp("decoder"), &config, &mode)?;
        // DetrForObjectDetection.__init__: the heads.
        let class_labels_classifier = Linear::load(&loader.pp(CLASSIFIER), d, classes, std)?;
        let boxes = loader.pp("bbox_predictor.layers");
        let bbox_predictor = vec![
            Linear::load(&boxes.pp("0"), d, d, std)?,
            Linear::load(&boxes.pp("1"), d, d, std)?,
            Linear::load(&boxes.pp("2"), d, 4, std)?,
        ];
        for (name, var) in params.all() {
            if Self::frozen_by_default(&name) {
                set_frozen(&var, true);
            }
        }
        Ok(Detr {
            config,
            backbone,
            input_projection,
            query_position_embeddings,
            encoder,
            decoder,
            class_labels_classifier,
            bbox_predictor,
            params,
            buffers,
            mode,
        })
    }

    /// Whether DETR keeps the parameter `name` out of training: the backbone's stem and first stage (ResNet's
    /// `layer1`), as DETR's reference code and transformers 4.x's `DetrConvEncoder` freeze them (it trains
    /// `stages.1`–`stages.3`). transformers 5.x means the same but tests for `"stage.1"`, which no ResNet
    /// parameter name contains, so it freezes the whole backbone; unfreeze with
    /// [`set_frozen`](crate::grad_mode::set_frozen) either way.
    pub fn frozen_by_default(name: &str) -> bool {
        name.starts_with(BACKBONE)
            && !["stages.1.", "stages.2.", "stages.3."]
                .iter()
                .any(|s| name.contains(s))
    }

    /// Training mode: dropout active (the frozen batch norms never change).
    pub fn set_training(&self, training: bool) {
        self.mode.set_training(training)
    }

    /// Every projection on top of the backbone, `pixel_values: [B, 3, H, W]` f32 and `pixel_mask: [B, H, W]`
    /// (1 = a real pixel, 0 = padding; `None`: all real) → logits `[B, Q, labels + 1]`, boxes `[B, Q, 4]` and
    /// the auxiliary predictions (see [`DetrOutput`]).
    pub fn forward(
        &self,
        pixel_values: &Tensor,
        pixel_mask: Option<&Tensor>,
    ) -> Result<DetrOutput> {
        let (b, _, h, w) = pixel_values.dims4().map_err(|_| {
            ModelError::InvalidInput(format!(
                "DETR: pixel_values must be (batch, channels, height, width), got {:?}",
                pixel_values.dims()
            ))
        })?;
        let ones;
        let pixel_mask = match pixel_mask {
            Some(m) => {
                if m.dims() != [b, h, w] {
                    return Err(ModelError::InvalidInput(format!(
                        "DETR: pixel_mask must be ({b}, {h}, {w}) to match pixel_values, got {:?}",
                        m.dims()
                    )));
                }
                m
            }
            None => {
                ones = Tensor::ones((b, h, w), candle_core::DType::F32, pixel_values.device())?;
                &ones
            }
        };
        let features = self
            .backbone
            .forward_stages(pixel_values, self.config.backbone_stage)?;
        let (_, _, fh, fw) = features.dims4()?;
        let mask = FeatureMask::downsample(pixel_mask, fh, fw)?;
        let device = pixel_values.device();
        let projected = self.input_projection.forward(&features)?;
        let positions = mask.sine_embedding(self.config.d_model / 2, device)?;
        let flat_mask = mask.flattened(device)?;
        let memory = self.encoder.forward(&projected, &positions, &flat_mask)?;
        let (q, d) = self.query_position_embeddings.dims2()?;
        let query_pos = param(&self.query_position_embeddings)
            .unsqueeze(0)?
            .broadcast_as((b, q, d))?
            .contiguous()?;
        let decoded = self
            .decoder
            .forward(&query_pos, &memory, &positions, &flat_mask)?;
        let head = self.heads(&decoded.last_hidden_state)?;
        let layers = decoded.intermediate.len();
        let auxiliary = decoded
            .intermediate
            .iter()
            .take(layers.saturating_sub(1))
            .map(|h| self.heads(h))
            .collect::<Result<Vec<_>>>()?;
        Ok(DetrOutput {
            logits: head.logits,
            pred_boxes: head.pred_boxes,
            auxiliary,
            last_hidden_state: decoded.last_hidden_state,
            encoder_last_hidden_state: memory,
        })
    }

    /// The class and box heads on decoder states `[B, Q, d]`.
    pub fn heads(&self, hidden: &Tensor) -> Result<DetrPrediction> {
        let logits = self.class_labels_classifier.forward(hidden)?;
        let mut x = hidden.clone();
        let last = self.bbox_predictor.len().saturating_sub(1);
        for (i, layer) in self.bbox_predictor.iter().enumerate() {
            x = layer.forward(&x)?;
            if i < last {
                x = x.relu()?;
            }
        }
        Ok(DetrPrediction {
            logits,
            pred_boxes: candle_nn::ops::sigmoid(&x)?,
        })
    }

    /// Every tensor of the model's state under HF names: the parameters and the batch norms' buffers, without
    /// `num_batches_tracked` (trainable norms count batches; `DetrFrozenBatchNorm2d` has no such buffer).
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut tensors = param_tensors(&self.params);
        tensors.extend(
            self.buffers
                .all()?
                .into_iter()
                .filter(|(n, _)| !n.ends_with("num_batches_tracked")),
        );
        Ok(tensors)
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if needed) under transformers' names,
    /// each atomically: a folder `DetrForObjectDetection.from_pretrained` loads.
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_model_tensors(dir, &self.state_tensors()?, &self.config.to_json())
    }
}
