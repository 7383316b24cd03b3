//! LoRA's settings and `adapter_config.json`, read as PEFT writes it and written with only keys PEFT has known
//! since 0.7 (a key an older PEFT does not know makes it refuse the whole file).

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{PeftError, Result};

/// The file PEFT keeps an adapter's settings in.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// Which projections LoRA wraps, as PEFT's `target_modules` says it.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetModules {
    /// A module is targeted when its name is one of these or ends with `.` + one of these.
    Names(Vec<String>),
    /// A module is targeted when the pattern matches its whole name (PEFT's `re.fullmatch`).
    Regex(String),
    /// Every projection but the output head (PEFT's `"all-linear"`).
    AllLinear,
}

/// The HF task a PEFT model wraps (`task_type`): it decides the PEFT class Python loads the adapter into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskType {
    SeqCls,
    TokenCls,
    CausalLm,
    FeatureExtraction,
}

impl TaskType {
    pub fn as_peft(self) -> &'static str {
        match self {
            TaskType::SeqCls => "SEQ_CLS",
            TaskType::TokenCls => "TOKEN_CLS",
            TaskType::CausalLm => "CAUSAL_LM",
            TaskType::FeatureExtraction => "FEATURE_EXTRACTION",
        }
    }

    pub(crate) fn from_peft(s: &str) -> Option<Self> {
        Some(match s {
            "SEQ_CLS" => TaskType::SeqCls,
            "TOKEN_CLS" => TaskType::TokenCls,
            "CAUSAL_LM" => TaskType::CausalLm,
            "FEATURE_EXTRACTION" => TaskType::FeatureExtraction,
            _ => return None,
        })
    }

    /// The heads PEFT trains and saves whole for this task (it adds them to `modules_to_save` itself).
    pub fn default_modules_to_save(self) -> &'static [&'static str] {
        match self {
            TaskType::SeqCls => &["classifier", "score"],
            TaskType::TokenCls => &["classifier", "score"],
            _ => &[],
        }
    }
}

/// LoRA: `y = W x + s · B A dropout(x)`, `s = alpha / r` (rsLoRA: `alpha / √r`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f32,
    pub target_modules: TargetModules,
    /// Modules trained and saved whole beside the adapter (a new classifier head).
    pub modules_to_save: Vec<String>,
    pub use_rslora: bool,
    /// DoRA: the weight split into a learned per-output magnitude and a direction that LoRA updates.
    pub use_dora: bool,
}

impl LoraConfig {
    /// PEFT's defaults (`r = 8`, `lora_alpha = 8`, no dropout) on the given targets.
    pub fn new(target_modules: TargetModules) -> Self {
        LoraConfig {
            r: 8,
            alpha: 8.0,
            dropout: 0.0,
            target_modules,
            modules_to_save: Vec::new(),
            use_rslora: false,
            use_dora: false,
        }
    }

    /// The factor `s` of the update.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Refuses settings LoRA cannot run with.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(PeftError::Invalid(
                "LoRA rank r must be at least 1, not 0".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(PeftError::Invalid(format!(
                "LoRA dropout must be in [0, 1), not {}",
                self.dropout
            )));
        }
        if let TargetModules::Regex(pattern) = &self.target_modules {
            regex::Regex::new(pattern).map_err(|e| {
                PeftError::Invalid(format!("target_modules: not a regular expression: {e}"))
            })?;
        }
        Ok(())
    }
}

/// An adapter's settings: its method, the base model it was made for, and the task.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    pub lora: LoraConfig,
    /// `base_model_name_or_path`: the folder or hub id of the base model.
    pub base_model: Option<String>,
    pub task_type: Option<TaskType>,
}

impl AdapterConfig {
    /// Reads `dir/adapter_config.json` as PEFT writes it; refuses a method or a LoRA feature mosaic does not run,
    /// naming it.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(ADAPTER_CONFIG);
        let v = read_json(&path)?;
        Self::from_json(&v).map_err(|message| PeftError::file(&path, message))
    }

    fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let peft_type = v
            .get("peft_type")
            .and_then(Value::as_str)
            .ok_or("no `peft_type` string")?;
        if peft_type != "LORA" {
            return Err(format!(
                "peft_type `{peft_type}` is not supported by mosaic (supported: LORA, PROMPT_TUNING, PREFIX_TUNING)"
            ));
        }
        refuse_lora_features(v)?;
        let r = uint(v, "r")?.unwrap_or(8);
        let alpha = v.get("lora_alpha").and_then(Value::as_f64).unwrap_or(8.0);
        let dropout = v.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0) as f32;
        let target_modules = match v.get("target_modules") {
            Some(Value::String(s)) if s == "all-linear" => TargetModules::AllLinear,
            Some(Value::String(s)) => TargetModules::Regex(s.clone()),
            Some(Value::Array(items)) => TargetModules::Names(strings(items, "target_modules")?),
            _ => return Err("`target_modules` must be a string or a list of names".into()),
        };
        let modules_to_save = match v.get("modules_to_save") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => strings(items, "modules_to_save")?,
            Some(_) => return Err("`modules_to_save` must be a list of names".into()),
        };
        let task_type = match v.get("task_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                TaskType::from_peft(s)
                    .ok_or_else(|| format!("task_type `{s}` is not supported"))?,
            ),
            Some(_) => return Err("`task_type` must be a string".into()),
        };
        let lora = LoraConfig {
            r,
            alpha,
            dropout,
            target_modules,
            modules_to_save,
            use_dora: v.get("use_dora").and_then(Value::as_bool).unwrap_or(false),
            use_rslora: v
                .get("use_rslora")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        lora.validate().map_err(|e| e.to_string())?;
        Ok(AdapterConfig {
            lora,
            base_model: v
                .get("base_model_name_or_path")
                .and_then(Value::as_str)
                .map(str::to_string),
            task_type,
        })
    }

    /// The JSON PEFT reads back: the keys every PEFT since 0.7 knows, nothing else. `targets` are the wrapped
    /// modules' names (PEFT, too, writes the names an `"all-linear"` expanded to); `fan_in_fan_out` says the
    /// weights are GPT-2 `Conv1D`s.
    pub fn to_json(&self, targets: &[String], fan_in_fan_out: bool) -> Value {
        let lora = &self.lora;
        let target_modules = match &lora.target_modules {
            TargetModules::Names(names) => json!(names),
            TargetModules::Regex(pattern) => json!(pattern),
            TargetModules::AllLinear => {
                let mut leaves: Vec<&str> = targets
                    .iter()
                    .map(|t| t.rsplit('.').next().unwrap_or(t))
                    .collect();
                leaves.sort_unstable();
                leaves.dedup();
                json!(leaves)
            }
        };
        let modules_to_save = if lora.modules_to_save.is_empty() {
            Value::Null
        } else {
            json!(lora.modules_to_save)
        };
        let mut v = json!({
            "base_model_name_or_path": self.base_model,
            "bias": "none",
            "fan_in_fan_out": fan_in_fan_out,
            "inference_mode": true,
            "init_lora_weights": true,
            // PEFT writes an integer alpha; keep one when it is one.
            "lora_alpha": if lora.alpha.fract() == 0.0 && lora.alpha.abs() < 1e15 {
                json!(lora.alpha as i64)
            } else {
                json!(lora.alpha)
            },
            "lora_dropout": lora.dropout,
            "modules_to_save": modules_to_save,
            "peft_type": "LORA",
            "r": lora.r,
            "revision": null,
            "target_modules": target_modules,
            "task_type": self.task_type.map(TaskType::as_peft),
            "use_rslora": lora.use_rslora,
        });
        // Only when on: PEFT before 0.9 does not know the key (and cannot run DoRA anyway).
        if lora.use_dora {
            v["use_dora"] = true.into();
        }
        v
    }
}

/// An `adapter_config.json` as JSON.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        PeftError::file(
            path,
            format!("cannot read ({e}); is this a PEFT adapter folder?"),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| PeftError::file(path, format!("malformed JSON: {e}")))
}

/// The `peft_type` of the adapter in `dir` (`LORA`, `PROMPT_TUNING`, ...).
pub fn peft_type(dir: &Path) -> Result<String> {
    let path = dir.join(ADAPTER_CONFIG);
    read_json(&path)?
        .get("peft_type")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| PeftError::file(&path, "no `peft_type` string"))
}

/// PEFT LoRA options that change the computation and that mosaic does not implement: an error naming the first.
fn refuse_lora_features(v: &Value) -> std::result::Result<(), String> {
    let truthy = |key: &str| match v.get(key) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    for key in [
        "rank_pattern",
        "alpha_pattern",
        "layers_to_transform",
        "layer_replication",
        "lora_bias",
        "target_parameters",
        "trainable_token_indices",
        "use_qalora",
        "alora_invocation_tokens",
    ] {
        if truthy(key) {
            return Err(format!("`{key}` is not supported by mosaic's LoRA"));
        }
    }
    match v.get("bias").and_then(Value::as_str) {
        None | Some("none") => Ok(()),
        Some(other) => Err(format!(
            "bias = \"{other}\" is not supported (only \"none\")"
        )),
    }
}

fn uint(v: &Value, key: &str) -> std::result::Result<Option<usize>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| format!("`{key}` must be a non-negative integer")),
    }
}

fn strings(items: &[Value], key: &str) -> std::result::Result<Vec<String>, String> {
    items
        .iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{key}` must list strings"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_config_reads_back() {
        let config = AdapterConfig {
            lora: LoraConfig {
                r: 4,
                alpha: 8.0,
                dropout: 0.1,
                target_modules: TargetModules::Names(vec!["query".into(), "value".into()]),
                modules_to_save: vec!["classifier".into()],
                use_rslora: true,
                use_dora: true,
            },
            base_model: Some("models/tiny".into()),
            task_type: Some(TaskType::SeqCls),
        };
        let back = AdapterConfig::from_json(&config.to_json(&[], false)).unwrap();
        assert_eq!(back, config);
        assert!((config.lora.scale() - 4.0).abs() < 1e-12);
    }

    #[test]
    fn unsupported_methods_and_features_are_named() {
        let err = AdapterConfig::from_json(&json!({"peft_type": "IA3"})).unwrap_err();
        assert!(err.contains("IA3"), "{err}");
        let err = AdapterConfig::from_json(
            &json!({"peft_type": "LORA", "rank_pattern": {"q": 2}, "target_modules": ["q"]}),
        )
        .unwrap_err();
        assert!(err.contains("rank_pattern"), "{err}");
        let err = AdapterConfig::from_json(
            &json!({"peft_type": "LORA", "r": 0, "target_modules": ["q"]}),
        )
        .unwrap_err();
        assert!(err.contains("r must be at least 1"), "{err}");
    }
}
