//! The optimizer a recipe's `[train]` section names (`optimizer`, `lr`, `weight_decay`, `momentum`), with a
//! run-specific rule for which parameters get no weight decay.

use candle_core::Var;

use crate::error::Result;
use crate::optim::{AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
use crate::recipe::{OptimizerKind, TrainSection};

/// AdamW or SGD over `params` as `cfg` says; parameters for which `no_decay(name)` is true get no weight decay.
pub fn recipe_optimizer(
    params: Vec<(String, Var)>,
    cfg: &TrainSection,
    no_decay: impl Fn(&str) -> bool,
) -> Result<Box<dyn Optimizer>> {
    Ok(match cfg.optimizer {
        OptimizerKind::Adamw => Box::new(AdamW::with_no_decay(
            params,
            AdamWConfig {
                lr: cfg.lr,
                weight_decay: cfg.weight_decay,
                ..AdamWConfig::default()
            },
            no_decay,
        )?),
        OptimizerKind::Sgd => Box::new(Sgd::with_no_decay(
            params,
            SgdConfig {
                lr: cfg.lr,
                momentum: cfg.momentum,
                dampening: 0.0,
                nesterov: false,
                weight_decay: cfg.weight_decay,
            },
            no_decay,
        )?),
    })
}
