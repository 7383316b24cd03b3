//! LoRA as a transform of a built model: every targeted [`Linear`] gets a [`LoraLinear`] in its adapter slot,
//! the base weights stay as they are (frozen by the trainer), and [`Lora::merge`] / [`Lora::unmerge`] fold the
//! update into the weights and restore them bit for bit.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor, Var};
use mosaic_models::dropout::{Dropout, Mode};
use mosaic_models::layers::{LinearAdapter, LinearEntry, WeightLayout};
use mosaic_models::{ParamStore, layers::Linear};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::config::AdapterConfig;
use crate::error::{PeftError, Result};
use crate::files::LoraFiles;
use crate::target;

/// The term LoRA adds to one projection: `s · B A dropout(x)`, `A (r, in)`, `B (out, r)`.
#[derive(Debug)]
pub struct LoraLinear {
    down: Linear,
    up: Linear,
    scale: f64,
    dropout: Dropout,
}

impl LoraLinear {
    pub fn new(a: Tensor, b: Tensor, scale: f64, dropout: Dropout) -> Self {
        LoraLinear {
            down: Linear::from_weights(a, None, WeightLayout::OutIn),
            up: Linear::from_weights(b, None, WeightLayout::OutIn),
            scale,
            dropout,
        }
    }
}

impl LinearAdapter for LoraLinear {
    fn forward(&self, x: &Tensor, base_output: Tensor) -> candle_core::Result<Tensor> {
        let update = self
            .up
            .forward(&self.down.forward(&self.dropout.forward(x)?)?)?;
        base_output + update.affine(self.scale, 0.0)?
    }
}

/// One wrapped projection.
#[derive(Debug)]
struct LoraModule {
    name: String,
    entry: LinearEntry,
    a: Var,
    b: Var,
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
            let adapter = Arc::new(LoraLinear::new(
                a.as_tensor().clone(),
                b.as_tensor().clone(),
                config.lora.scale(),
                Dropout::new(config.lora.dropout, mode.clone()),
            ));
            entry
                .slot
                .set(Some(adapter.clone() as Arc<dyn LinearAdapter>));
            modules.push(LoraModule {
                name: name.clone(),
                entry: entry.clone(),
                a,
                b,
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
        }
        out.extend(self.saved.iter().cloned());
        out
    }

    /// The `(A, B)` of the projection `name`, to set from a file.
    pub(crate) fn factors(&self, name: &str) -> Option<(&Var, &Var)> {
        self.modules
            .iter()
            .find(|m| m.name == name)
            .map(|m| (&m.a, &m.b))
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
                .map(|m| (m.name.clone(), m.a.clone(), m.b.clone()))
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
            w.set(&(&original + self.delta(m)?)?)?;
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
        for m in &self.modules {
            self.store.remove(&format!("{}.lora_A.weight", m.name));
            self.store.remove(&format!("{}.lora_B.weight", m.name));
        }
        self.store.set_adapter_files(None);
        Ok(())
    }

    /// Takes the adapters out without merging: the model is the base model again.
    pub fn unload(self) -> Result<()> {
        self.unmerge()?;
        for m in &self.modules {
            m.entry.slot.set(None);
            self.store.remove(&format!("{}.lora_A.weight", m.name));
            self.store.remove(&format!("{}.lora_B.weight", m.name));
        }
        self.store.set_adapter_files(None);
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
