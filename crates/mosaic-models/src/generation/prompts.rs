//! Preparing a batch of prompts for a decoder: truncation to the context (from the left, keeping the end of the
//! prompt), left padding (so every row's next token comes from the last column), and the positions that skip it.

use candle_core::{Device, Result, Tensor};

/// Prompts padded on the left to one width, as (B, T) rows.
#[derive(Debug, Clone)]
pub struct LeftPadded {
    pub width: usize,
    /// Token ids, padding first.
    pub input_ids: Vec<Vec<u32>>,
    /// 1 = token, 0 = padding.
    pub attention_mask: Vec<Vec<u32>>,
    /// 0, 1, 2, … over each row's real tokens; padding gets 0 (it is never attended to).
    pub position_ids: Vec<Vec<u32>>,
}

impl LeftPadded {
    pub fn new(rows: &[Vec<u32>], pad_id: u32) -> Self {
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut padded = LeftPadded {
            width,
            input_ids: Vec::with_capacity(rows.len()),
            attention_mask: Vec::with_capacity(rows.len()),
            position_ids: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            let pad = width - row.len();
            let mut ids = vec![pad_id; pad];
            ids.extend_from_slice(row);
            let mut mask = vec![0u32; pad];
            mask.resize(width, 1);
            let mut positions = vec![0u32; pad];
            positions.extend(0..row.len() as u32);
            padded.input_ids.push(ids);
            padded.attention_mask.push(mask);
            padded.position_ids.push(positions);
        }
        padded
    }

    /// `(input_ids, attention_mask, position_ids)`, each (B, T) u32.
    pub fn tensors(&self, device: &Device) -> Result<(Tensor, Tensor, Tensor)> {
        let b = self.input_ids.len();
        let flat = |rows: &[Vec<u32>]| Tensor::from_vec(rows.concat(), (b, self.width), device);
        Ok((
            flat(&self.input_ids)?,
            flat(&self.attention_mask)?,
            flat(&self.position_ids)?,
        ))
    }
}

/// Positions for a (B, T) attention mask as transformers' `generate` makes them: `cumsum(mask) - 1`, padding at
/// 0. Use them for left-padded input; right-padded input can keep the default `0..T`.
pub fn positions_from_mask(attention_mask: &Tensor) -> Result<Tensor> {
    let mask = attention_mask
        .to_dtype(candle_core::DType::F32)?
        .to_vec2::<f32>()?;
    let (b, t) = attention_mask.dims2()?;
    let mut positions = Vec::with_capacity(b * t);
    for row in mask {
        let mut seen = 0u32;
        for m in row {
            if m != 0.0 {
                positions.push(seen);
                seen += 1;
            } else {
                positions.push(0);
            }
        }
    }
    Tensor::from_vec(positions, (b, t), attention_mask.device())
}

/// Keeps the last `keep` tokens of `prompt`; returns how many were dropped.
pub fn truncate_left(prompt: &mut Vec<u32>, keep: usize) -> usize {
    let dropped = prompt.len().saturating_sub(keep);
    prompt.drain(..dropped);
    dropped
}
