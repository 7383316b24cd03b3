//! # mosaic-benches
//!
//! The machinery behind `cargo xtask bench` (the `kernels` criterion bench of
//! this crate): the benchmark cases (mosaic's fused kernels and candle's
//! composed versions of the same ops), a counting allocator for peak memory,
//! the side-by-side table and its JSON form, and the PyTorch peer figures
//! from `../shared/peers/torch_attention.py`; and the whole-model cases of
//! `cargo xtask bench model` ([`model_cases`], [`model_report`]) with their
//! PyTorch peer `benches/scripts/torch_model.py`.
//!
//! ```
//! use mosaic_benches::cases::{AttnShape, Impl, attention_flops};
//! use mosaic_benches::report::{Entry, table};
//!
//! let shape = AttnShape { b: 1, h: 2, n: 64, d: 16, causal: false };
//! // Forward: two N×N×D products per head.
//! assert_eq!(attention_flops(&shape), 4.0 * 2.0 * 64.0 * 64.0 * 16.0);
//! let mosaic = Entry::attention(&shape, Impl::Mosaic, Some(1.0), Some(3.0), Some(1 << 20));
//! let candle = Entry::attention(&shape, Impl::Candle, Some(8.0), Some(30.0), Some(8 << 20));
//! let text = table(&[mosaic, candle], None);
//! assert!(text.contains("8.00x"));
//! ```

pub mod alloc;
pub mod cases;
pub mod model_cases;
pub mod model_report;
pub mod report;
pub mod torch;
