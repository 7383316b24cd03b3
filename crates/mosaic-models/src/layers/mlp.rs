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
    /// Dropout between the activation and `fc_out` (DETR's `activation_dropout`); `None` in most models.
    activation_dropout: Option<Dropout>,
}

impl Mlp {
    /// The projections come loaded under their HF names; `dropout` acts on the output.
    pub fn new(fc_in: Linear, fc_out: Linear, activation: Activation, dropout: Dropout) -> Self {
        Mlp {
            fc_in,
            fc_out,
            activation,
            dropout,
            activation_dropout: None,
        }
    }

    /// The same block with `dropout` also on the activations, before `fc_out` (transformers' `DetrMLP`).
    pub fn with_activation_dropout(mut self, dropout: Dropout) -> Self {
        self.activation_dropout = Some(dropout);
        self
    }

    /// `x: [..., hidden] -> [..., hidden]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut inner = self.activation.forward(&self.fc_in.forward(x)?)?;
        if let Some(dropout) = &self.activation_dropout {
            inner = dropout.forward(&inner)?;
        }
        self.dropout.forward(&self.fc_out.forward(&inner)?)
    }
}
