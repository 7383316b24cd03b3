//! GPT-2 (Radford et al.) as Hugging Face's `modeling_gpt2` defines it — training grade (every op has a backward
//! pass, dropout is seeded) and generation ready (key/value cache, positions for left-padded batches).
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use mosaic_models::Gpt2;
//! use mosaic_models::generation::{GenerationConfig, generate};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gpt2 = Gpt2::from_folder("fixtures/models/tiny-gpt2".as_ref(), 0, &Device::Cpu)?;
//! let ids = Tensor::new(&[[300u32, 221, 81]], &Device::Cpu)?;
//! let logits = gpt2.logits(&ids, None)?; // (1, 3, vocab)
//! let config = GenerationConfig::greedy(8).with_eos(gpt2.config.eos_token_ids.clone());
//! let out = generate(&gpt2, &[vec![300, 221, 81]], &config, None)?;
//! println!("{:?}", out[0].token_ids);
//! # let _ = logits; Ok(()) }
//! ```

mod config;
mod lm;
mod model;

pub use config::{GPT2_ARCHITECTURE, Gpt2Config};
pub use lm::{Gpt2, causal_lm_loss_sum};
pub use model::{Gpt2Model, TokenLayout};
