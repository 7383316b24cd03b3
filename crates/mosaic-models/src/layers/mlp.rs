//! The position-wise feed-forward block of every transformer layer.

use candle_core::Tensor;

use super::activation::Activation;
use super::linear::Linear;
use crate::dropout::Dropout;

/// `dropout(fc_out(act(fc_in(x))))`: BERT's intermediate + output dense, GPT-2's `c_fc`/`c_proj`, ViT's
/// intermediate + output dense, CLIP's `fc1`/`fc2` (dropout 0).
#[derive(Debug, Clone)]
pub struct Mlp {
    fc_in: Linear,
    fc_out: Linear,
    activation: Activation,
    dropout: Dropout,
}

impl Mlp {
    /// The projections come loaded under their HF names; `dropout` acts on the output.
    pub fn new(fc_in: Linear, fc_out: Linear, activation: Activation, dropout: Dropout) -> Self {
        Mlp {
            fc_in,
            fc_out,
            activation,
            dropout,
        }
    }

    /// `x: [..., hidden] -> [..., hidden]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let inner = self.activation.forward(&self.fc_in.forward(x)?)?;
        self.dropout.forward(&self.fc_out.forward(&inner)?)
    }
}
