//! Multimodal-classification data: JSONL rows `{"image": "<path relative to the file>", "text": "…", "label": …}`,
//! each image decoded and preprocessed once with the CLIP folder's `preprocessor_config.json`, each text
//! tokenized once with the text encoder's tokenizer; batches are right-padded with attention masks.

use std::path::Path;

use candle_core::{Device, Tensor};
use mosaic_data::Encoder;
use mosaic_data::image::{ImageProcessor, decode_file};

use super::features::TowerFeatures;
use crate::error::{Result, TrainError};

/// The JSONL columns a row is read from (`data.image_field`, `data.text_field`, `data.label_field`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fields {
    pub image: String,
    pub text: String,
    pub label: String,
}

/// One JSONL row before decoding: where it is (`file:line`), its image path, text and label.
struct Row {
    at: String,
    image: std::path::PathBuf,
    text: String,
    /// `None` only when the reader does not need labels (prediction).
    label: Option<String>,
}

/// One split, decoded and tokenized: `pixels (N, 3, H, W)`, token ids per example, class ids.
pub struct PairSet {
    pub pixels: Tensor,
    pub input_ids: Vec<Vec<u32>>,
    pub labels: Vec<usize>,
    pad_id: u32,
    /// Every example's tower features, when the towers are frozen (see `MultimodalClassifier::cache_features`).
    features: Option<TowerFeatures>,
}

/// A batch of a [`PairSet`]: `pixels (B, 3, H, W)`, `input_ids`/`attention_mask`/`token_type_ids` `(B, T)` u32
/// (right-padded), `labels (B)` i64.
pub struct PairBatch {
    pub pixels: Tensor,
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
    pub labels: Tensor,
    /// The examples' cached tower features, when the split has them.
    pub features: Option<TowerFeatures>,
}

/// A label cell as a string: JSON strings as they are, other values (`true`, `3`) as JSON writes them.
fn label_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn read_rows(path: &Path, fields: &Fields, needs_label: bool) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::file(path, e))?;
    let root = path.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), i + 1);
        let bad = |message: String| TrainError::Invalid(format!("{at}: {message}"));
        let row: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let string = |field: &str, what: &str| {
            row.get(field)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| bad(format!("no string field `{field}` (the {what})")))
        };
        let image = root.join(string(&fields.image, "image")?);
        let text = string(&fields.text, "text")?;
        let label = row.get(&fields.label).and_then(label_string);
        if needs_label && label.is_none() {
            return Err(bad(format!("no field `{}` (the label)", fields.label)));
        }
        if !image.is_file() {
            return Err(bad(format!("image {} does not exist", image.display())));
        }
        rows.push(Row {
            at,
            image,
            text,
            label,
        });
    }
    if rows.is_empty() {
        return Err(TrainError::file(path, "no examples"));
    }
    Ok(rows)
}

/// The sorted distinct labels of a training file.
pub fn read_labels(path: &Path, fields: &Fields) -> Result<Vec<String>> {
    let mut labels: Vec<String> = read_rows(path, fields, true)?
        .into_iter()
        .filter_map(|r| r.label)
        .collect();
    labels.sort();
    labels.dedup();
    Ok(labels)
}

/// How a split is read: its columns, the class names, the image processor and the tokenizer.
pub struct PairReader<'a> {
    pub fields: &'a Fields,
    pub labels: &'a [String],
    pub processor: &'a ImageProcessor,
    pub encoder: &'a Encoder,
    /// The most tokens a text keeps, special tokens included.
    pub max_length: usize,
    /// Whether every row must have a known label (training, evaluation); prediction reads rows without one
    /// (their class id is then 0).
    pub needs_labels: bool,
}

impl PairReader<'_> {
    /// Reads, decodes and tokenizes a JSONL file; a bad row (missing image or text, unknown label, an image
    /// that does not decode) is an error naming `file:line`.
    pub fn load(&self, path: &Path, device: &Device) -> Result<PairSet> {
        let rows = read_rows(path, self.fields, self.needs_labels)?;
        let mut labels = Vec::with_capacity(rows.len());
        let mut data = Vec::new();
        let mut shape = [0usize; 3];
        for row in &rows {
            let bad = |message: String| TrainError::Invalid(format!("{}: {message}", row.at));
            let label = match &row.label {
                Some(name) => self.labels.iter().position(|l| l == name),
                None => Some(0),
            };
            let label = match label {
                Some(id) => id,
                None if !self.needs_labels => 0,
                None => {
                    return Err(bad(format!(
                        "unknown label `{}` (the training labels are {})",
                        row.label.as_deref().unwrap_or_default(),
                        self.labels.join(", ")
                    )));
                }
            };
            labels.push(label);
            let px = decode_file(&row.image)
                .and_then(|image| self.processor.preprocess(&image))
                .map_err(|e| bad(format!("image {}: {e}", row.image.display())))?;
            if !data.is_empty() && px.shape() != shape {
                return Err(bad(format!(
                    "image {} preprocesses to {:?}, the others to {shape:?} (the image processor needs a fixed \
                     size)",
                    row.image.display(),
                    px.shape()
                )));
            }
            shape = px.shape();
            data.extend_from_slice(&px.data);
        }
        let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        let (encodings, _) = self.encoder.encode_texts(&texts, self.max_length)?;
        let input_ids = encodings.iter().map(|e| e.get_ids().to_vec()).collect();
        let pixels = Tensor::from_vec(data, (rows.len(), shape[0], shape[1], shape[2]), device)?;
        Ok(PairSet {
            pixels,
            input_ids,
            labels,
            pad_id: self.encoder.pad_id(),
            features: None,
        })
    }
}

impl PairSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The most tokens any example has.
    pub fn max_tokens(&self) -> usize {
        self.input_ids
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(1)
    }

    /// Keeps every example's tower features; later batches carry their rows.
    pub fn set_features(&mut self, features: TowerFeatures) {
        self.features = Some(features);
    }

    /// The examples at `indices`, texts right-padded to the longest (with the cached tower features' rows, when
    /// the split has them).
    pub fn batch(&self, indices: &[usize]) -> Result<PairBatch> {
        let t = indices
            .iter()
            .map(|&i| self.input_ids[i].len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut batch = self.batch_padded(indices, t)?;
        if let Some(f) = &self.features {
            let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
            let idx = Tensor::from_vec(idx, indices.len(), self.pixels.device())?;
            batch.features = Some(f.select(&idx)?);
        }
        Ok(batch)
    }

    /// The examples at `indices` with texts right-padded to `t` tokens, without cached features.
    pub fn batch_padded(&self, indices: &[usize], t: usize) -> Result<PairBatch> {
        let device = self.pixels.device();
        let b = indices.len();
        let mut ids = vec![self.pad_id; b * t];
        let mut mask = vec![0u32; b * t];
        for (row, &i) in indices.iter().enumerate() {
            for (j, &id) in self.input_ids[i].iter().enumerate() {
                ids[row * t + j] = id;
                mask[row * t + j] = 1;
            }
        }
        let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, b, device)?;
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i] as i64).collect();
        Ok(PairBatch {
            pixels: self.pixels.index_select(&idx, 0)?,
            input_ids: Tensor::from_vec(ids, (b, t), device)?,
            attention_mask: Tensor::from_vec(mask, (b, t), device)?,
            token_type_ids: Tensor::zeros((b, t), candle_core::DType::U32, device)?,
            labels: Tensor::from_vec(labels, b, device)?,
            features: None,
        })
    }
}
