//! Object detection, DETR-style: the Hungarian matcher that pairs object queries with ground-truth boxes and the
//! set loss over the matched pairs, both as transformers computes them.

pub mod matcher;
pub mod set_loss;

pub use matcher::{DetectionTarget, HungarianMatcher, Match, linear_sum_assignment};
pub use set_loss::{DetrLoss, DetrLossConfig, DetrLossOutput};
