//! LoRA as a transform of a built model: every targeted [`Linear`] gets a [`LoraLinear`] in its adapter slot,
//! the base weights stay as they are (frozen by the trainer), and [`Lora::merge`] / [`Lora::unmerge`] fold the
//! update into the weights and restore them bit for bit.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor, Var};
use mosaic_models::dropout::{Dropout, Mode};
use mosaic_models::layers::{LinearAdapter, LinearEntry, WeightLayout};
use mosaic_models::params::Checkpoint;
use mosaic_models::{ParamStore, layers::Linear};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::config::AdapterConfig;
use crate::error::{PeftError, Result};
use crate::files::{ADAPTER_WEIGHTS, LoraFiles, PEFT_PREFIX, lora_key, magnitude_key};
use crate::target;

/// The term LoRA adds to one projection: `s · B A dropout(x)`, `A (r, in)`, `B (out, r)`; with DoRA, the
/// projection's output rescaled per output by `m / ‖W + s B A‖` as well.
#[derive(Debug)]
pub struct LoraLinear {
    down: Linear,
    up: Linear,
    scale: f64,
    dropout: Dropout,
    dora: Option<Dora>,
}

/// What DoRA needs of the wrapped projection: its learned magnitude `(out,)` and the frozen weight and bias.
#[derive(Debug)]
pub struct Dora {
    pub magnitude: Tensor,
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub layout: WeightLayout,
}

/// `weight` as `(out, in)`.
fn out_in(weight: &Tensor, layout: WeightLayout) -> candle_core::Result<Tensor> {
    match layout {
        WeightLayout::OutIn => Ok(weight.clone()),
        WeightLayout::InOut => weight.t(),
    }
}

/// `‖W + s B A‖` over each output row `(out,)`, with no gradient (DoRA's norm is a constant, as in PEFT).
fn dora_norm(dora: &Dora, a: &Tensor, b: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    let ba = b.detach().matmul(&a.detach())?.affine(scale, 0.0)?;
    (out_in(&dora.weight.detach(), dora.layout)? + ba)?
        .sqr()?
        .sum(1)?
        .sqrt()
}

impl LoraLinear {
    pub fn new(a: Tensor, b: Tensor, scale: f64, dropout: Dropout, dora: Option<Dora>) -> Self {
        LoraLinear {
            down: Linear::from_weights(a, None, WeightLayout::OutIn),
            up: Linear::from_weights(b, None, WeightLayout::OutIn),
            scale,
            dropout,
            dora,
        }
    }
}

impl LinearAdapter for LoraLinear {
    fn forward(&self, x: &Tensor, base_output: Tensor) -> candle_core::Result<Tensor> {
        if let Some(dora) = &self.dora {
            return self.dora_forward(dora, x, base_output);
        }
        // The scale goes on the rank-r activation (rows × r), not on the output: one full-width tensor fewer
        // kept for the backward pass per wrapped projection.
        let down = self
            .down
            .forward(&self.dropout.forward(x)?)?
            .affine(self.scale, 0.0)?;
        base_output + self.up.forward(&down)?
    }
}

impl LoraLinear {
    /// PEFT's DoRA: `y + (m/‖W'‖ − 1) ⊙ (x Wᵀ) + m/‖W'‖ ⊙ s B A x`, `W' = W + s B A`, the norm held constant.
    fn dora_forward(
        &self,
        dora: &Dora,
        x: &Tensor,
        base_output: Tensor,
    ) -> candle_core::Result<Tensor> {
        let h = self.dropout.forward(x)?;
        let lora = self
            .up
            .forward(&self.down.forward(&h)?.affine(self.scale, 0.0)?)?;
        let norm = dora_norm(dora, self.down.weight(), self.up.weight(), self.scale)?;
        let magnitude = mosaic_models::grad_mode::param(&dora.magnitude);
        let factor = magnitude.div(&norm)?;
        // The base product without its bias: on the dropped-out input while dropout is on, as PEFT computes it.
        let base = if self.dropout.is_active() {
            Linear::from_weights(dora.weight.clone(), None, dora.layout).forward(&h)?
        } else {
            match &dora.bias {
                Some(bias) => base_output.broadcast_sub(&mosaic_models::grad_mode::param(bias))?,
                None => base_output.clone(),
            }
        };
        let extra =
            (base.broadcast_mul(&factor.affine(1.0, -1.0)?)? + lora.broadcast_mul(&factor)?)?;
        base_output + extra
    }
}

/// One wrapped projection.
#[derive(Debug)]
struct LoraModule {
    name: String,
    entry: LinearEntry,
    a: Var,
    b: Var,
    /// DoRA's magnitude `(out,)`.
    magnitude: Option<Var>,
    adapter: Arc<LoraLinear>,
}

/// LoRA applied to a model's [`ParamStore`]: the adapters in their slots, their `A`/`B` parameters registered in
/// the store (`<module>.lora_A.weight`), and the store marked so that saving the model writes the adapter
/// (`adapter_config.json` + `adapter_model.safetensors`) instead of the whole model.
#[derive(Debug)]
pub struct Lora {
    store: ParamStore,
    config: AdapterConfig,
    modules: Vec<LoraModule>,
    /// The parameters of `modules_to_save`, by store name: trained and saved whole.
    saved: Vec<(String, Var)>,
    /// The weights as they were before [`merge`](Self::merge), while merged.
    unmerged: Mutex<Option<Vec<Tensor>>>,
}

impl Lora {
    /// Wraps the projections `config.lora.target_modules` names with fresh adapters: `A` drawn as PEFT does
    /// (Kaiming-uniform, `U(-1/√in, 1/√in)`, from `seed`), `B` zero, so the model's outputs are unchanged.
    /// `mode` is the model's train/eval switch (LoRA dropout runs in training only).
    pub fn apply(
        store: &ParamStore,
        mode: Arc<Mode>,
        config: AdapterConfig,
        seed: u64,
    ) -> Result<Self> {
        config.lora.validate()?;
        let linears = store.linears();
        let picked = target::select(&linears, &config.lora.target_modules)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let r = config.lora.r;
        let mut modules = Vec::with_capacity(picked.len());
        for (name, entry) in picked {
            if entry.slot.get().is_some() {
                return Err(PeftError::Invalid(format!(
                    "`{name}` already has an adapter"
                )));
            }
            let weight = store.get(&format!("{name}.weight")).ok_or_else(|| {
                PeftError::Invalid(format!(
                    "the projection `{name}` has no weight in the model"
                ))
            })?;
            let device = weight.device().clone();
            let bound = 1.0 / (entry.in_dim as f64).sqrt();
            let a_data: Vec<f32> = (0..r * entry.in_dim)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect();
            let a = Var::from_tensor(&Tensor::from_vec(a_data, (r, entry.in_dim), &device)?)?;
            let b = Var::zeros((entry.out_dim, r), DType::F32, &device)?;
            store.insert(&format!("{name}.lora_A.weight"), a.clone());
            store.insert(&format!("{name}.lora_B.weight"), b.clone());
            let (dora, magnitude) = if config.lora.use_dora {
                let bias = store
                    .get(&format!("{name}.bias"))
                    .map(|v| v.as_tensor().clone());
                let mut parts = Dora {
                    magnitude: Tensor::zeros(entry.out_dim, DType::F32, &device)?,
                    weight: weight.as_tensor().clone(),
                    bias,
                    layout: entry.layout,
                };
                // With B = 0 the magnitude starts as ‖W‖ per output: the adapted model equals the base one.
                let m = Var::from_tensor(&dora_norm(
                    &parts,
                    a.as_tensor(),
                    b.as_tensor(),
                    config.lora.scale(),
                )?)?;
                store.insert(&format!("{name}.lora_magnitude_vector"), m.clone());
                parts.magnitude = m.as_tensor().clone();
                (Some(parts), Some(m))
            } else {
                (None, None)
            };
            let adapter = Arc::new(LoraLinear::new(
                a.as_tensor().clone(),
                b.as_tensor().clone(),
                config.lora.scale(),
                Dropout::new(config.lora.dropout, mode.clone()),
                dora,
            ));
            entry
                .slot
                .set(Some(adapter.clone() as Arc<dyn LinearAdapter>));
            modules.push(LoraModule {
                name: name.clone(),
                entry: entry.clone(),
                a,
                b,
                magnitude,
                adapter,
            });
        }
        let saved = saved_params(store, &config.lora.modules_to_save);
        let lora = Lora {
            store: store.clone(),
            config,
            modules,
            saved,
            unmerged: Mutex::new(None),
        };
        store.set_adapter_files(Some(Arc::new(lora.files())));
        Ok(lora)
    }

    pub fn config(&self) -> &AdapterConfig {
        &self.config
    }

    /// Records `base` as the base model the adapter is saved for (`base_model_name_or_path`).
    pub fn set_base_model(&mut self, base: String) {
        self.config.base_model = Some(base);
        self.store.set_adapter_files(Some(Arc::new(self.files())));
    }

    /// The wrapped projections' names, in model order.
    pub fn targets(&self) -> Vec<String> {
        self.modules.iter().map(|m| m.name.clone()).collect()
    }

    /// What trains: every `A` and `B`, and the parameters of `modules_to_save`.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let mut out = Vec::with_capacity(2 * self.modules.len() + self.saved.len());
        for m in &self.modules {
            out.push((format!("{}.lora_A.weight", m.name), m.a.clone()));
            out.push((format!("{}.lora_B.weight", m.name), m.b.clone()));
            if let Some(mag) = &m.magnitude {
                out.push((format!("{}.lora_magnitude_vector", m.name), mag.clone()));
            }
        }
        out.extend(self.saved.iter().cloned());
        out
    }

    /// The `(A, B, DoRA magnitude)` of the projection `name`, to set from a file.
    pub(crate) fn factors(&self, name: &str) -> Option<(&Var, &Var, Option<&Var>)> {
        self.modules
            .iter()
            .find(|m| m.name == name)
            .map(|m| (&m.a, &m.b, m.magnitude.as_ref()))
    }

    pub(crate) fn saved(&self) -> &[(String, Var)] {
        &self.saved
    }

    /// What saving the model writes while this adapter is attached.
    pub(crate) fn files(&self) -> LoraFiles {
        let targets = self.targets();
        let fan_in_fan_out = self
            .modules
            .iter()
            .any(|m| m.entry.layout == WeightLayout::InOut);
        LoraFiles {
            config: self.config.to_json(&targets, fan_in_fan_out),
            factors: self
                .modules
                .iter()
                .map(|m| {
                    (
                        m.name.clone(),
                        m.a.clone(),
                        m.b.clone(),
                        m.magnitude.clone(),
                    )
                })
                .collect(),
            saved: self.saved.clone(),
        }
    }

    /// `s · B A` in the layout of the projection's weight.
    fn delta(&self, m: &LoraModule) -> Result<Tensor> {
        let ba =
            m.b.as_tensor()
                .matmul(m.a.as_tensor())?
                .affine(self.config.lora.scale(), 0.0)?;
        Ok(match m.entry.layout {
            WeightLayout::OutIn => ba,
            WeightLayout::InOut => ba.t()?.contiguous()?,
        })
    }

    fn weight(&self, m: &LoraModule) -> Result<Var> {
        self.store
            .get(&format!("{}.weight", m.name))
            .ok_or_else(|| PeftError::Invalid(format!("`{}` has no weight", m.name)))
    }

    /// Folds every update into its weight (`W + s · B A`) and takes the adapters out of the forward pass, so
    /// the model runs at the base model's cost. A second merge does nothing.
    pub fn merge(&self) -> Result<()> {
        let mut unmerged = self.unmerged.lock().unwrap_or_else(|e| e.into_inner());
        if unmerged.is_some() {
            return Ok(());
        }
        let mut originals = Vec::with_capacity(self.modules.len());
        for m in &self.modules {
            let w = self.weight(m)?;
            let original = w.as_tensor().copy()?;
            let mut merged = (&original + self.delta(m)?)?;
            if let Some(mag) = &m.magnitude {
                // DoRA: each output row of W + s B A rescaled to its learned magnitude.
                let norm = out_in(&merged, m.entry.layout)?.sqr()?.sum(1)?.sqrt()?;
                let factor = mag.as_tensor().div(&norm)?;
                merged = match m.entry.layout {
                    WeightLayout::OutIn => merged.broadcast_mul(&factor.unsqueeze(1)?)?,
                    WeightLayout::InOut => merged.broadcast_mul(&factor.unsqueeze(0)?)?,
                };
            }
            w.set(&merged)?;
            originals.push(original);
            m.entry.slot.set(None);
        }
        *unmerged = Some(originals);
        Ok(())
    }

    /// Restores the weights exactly as they were before [`merge`](Self::merge) and puts the adapters back.
    pub fn unmerge(&self) -> Result<()> {
        let mut unmerged = self.unmerged.lock().unwrap_or_else(|e| e.into_inner());
        let Some(originals) = unmerged.take() else {
            return Ok(());
        };
        for (m, original) in self.modules.iter().zip(originals) {
            self.weight(m)?.set(&original)?;
            m.entry
                .slot
                .set(Some(m.adapter.clone() as Arc<dyn LinearAdapter>));
        }
        Ok(())
    }

    /// Merges, then removes every trace of the adapter from the model (PEFT's `merge_and_unload`): saving it
    /// afterwards writes a whole HF model folder.
    pub fn merge_and_unload(self) -> Result<()> {
        self.merge()?;
        self.forget();
        Ok(())
    }

    /// Removes the adapter's parameters from the store and the adapter mark.
    fn forget(&self) {
        for m in &self.modules {
            for part in ["lora_A.weight", "lora_B.weight", "lora_magnitude_vector"] {
                self.store.remove(&format!("{}.{part}", m.name));
            }
        }
        self.store.set_adapter_files(None);
    }

    /// Takes the adapters out without merging: the model is the base model again.
    pub fn unload(self) -> Result<()> {
        self.unmerge()?;
        for m in &self.modules {
            m.entry.slot.set(None);
        }
        self.forget();
        Ok(())
    }
}

/// The parameters under the modules `modules_to_save` names (PEFT wraps the whole module, e.g. `classifier`).
pub(crate) fn saved_params(store: &ParamStore, modules_to_save: &[String]) -> Vec<(String, Var)> {
    store
        .all()
        .into_iter()
        .filter(|(name, _)| {
            let segments: Vec<&str> = name.split('.').collect();
            (1..segments.len()).any(|k| {
                let module = segments[..k].join(".");
                modules_to_save
                    .iter()
                    .any(|m| target::names_module(m, &module))
            })
        })
        .collect()
}

impl Lora {
    /// Applies the adapter saved in `dir` (by PEFT or by mosaic) to the model of `store`: its config chooses the
    /// projections, its tensors set `A`, `B` and the modules saved whole. A tensor the model has no place for,
    /// or of another shape, is an error naming it (an adapter made for another base model).
    pub fn load(store: &ParamStore, mode: Arc<Mode>, dir: &Path) -> Result<Self> {
        let config = AdapterConfig::read(dir)?;
        let lora = Lora::apply(store, mode, config, 0)?;
        let path = dir.join(ADAPTER_WEIGHTS);
        let device = lora
            .trainable()
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let file = Checkpoint::read(&path, &device)?;
        let mut unused: BTreeSet<String> = file.names().map(str::to_string).collect();
        let mut set = |key: &str, var: &Var| -> Result<()> {
            let tensor = file
                .load(key)?
                .ok_or_else(|| PeftError::file(&path, format!("no tensor `{key}`")))?;
            if tensor.dims() != var.dims() {
                return Err(PeftError::file(
                    &path,
                    format!(
                        "tensor `{key}` has shape {:?} but the model's is {:?}: the adapter was made for another base model",
                        tensor.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&tensor.to_dtype(DType::F32)?)?;
            unused.remove(key);
            Ok(())
        };
        for module in lora.targets() {
            if let Some((a, b, magnitude)) = lora.factors(&module) {
                set(&lora_key(&module, "lora_A"), a)?;
                set(&lora_key(&module, "lora_B"), b)?;
                if let Some(m) = magnitude {
                    set(&magnitude_key(&module), m)?;
                }
            }
        }
        for (name, var) in lora.saved() {
            let key = format!("{PEFT_PREFIX}{name}");
            if file.contains(&key) {
                set(&key, var)?;
            }
        }
        if let Some(key) = unused.into_iter().next() {
            return Err(PeftError::file(
                &path,
                format!(
                    "tensor `{key}` has no place in this model: the adapter was made for another base model or task"
                ),
            ));
        }
        Ok(lora)
    }
}
