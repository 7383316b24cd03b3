//! The weights of a `model.safetensors`, read through a memory map: opening a file reads only its header, and
//! each tensor is read (and converted to f32) when a model asks for it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

/// Weights of one checkpoint file, by name; empty for a freshly initialised model.
#[derive(Clone)]
pub struct Checkpoint {
    pub path: PathBuf,
    source: Option<Arc<MmapedSafetensors>>,
    /// The shape of every tensor still offered (see [`remove`](Self::remove)).
    shapes: HashMap<String, Vec<usize>>,
    device: Device,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            path: PathBuf::new(),
            source: None,
            shapes: HashMap::new(),
            device: Device::Cpu,
        }
    }
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .field("tensors", &self.shapes.len())
            .finish()
    }
}

impl Checkpoint {
    /// Maps a safetensors file and reads its header; tensors are loaded onto `device` when asked for.
    pub fn read(path: &Path, device: &Device) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        let bad = |e: candle_core::Error| ModelError::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        // SAFETY: a mapped file must not change while mapped. mosaic never writes a weights file in place (saves
        // go to a temporary file renamed over the old one, which leaves a live mapping on the old contents); a
        // file truncated by another program underneath is outside what any reader can defend against.
        let source = unsafe { MmapedSafetensors::new(path) }.map_err(bad)?;
        let shapes = source
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect();
        Ok(Checkpoint {
            path: path.to_path_buf(),
            source: Some(Arc::new(source)),
            shapes,
            device: device.clone(),
        })
    }

    /// No tensors: a model built from it is initialised from scratch.
    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.shapes.get(name).map(Vec::as_slice)
    }

    /// The names of the tensors offered, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.shapes.keys().map(String::as_str)
    }

    /// Stops offering `name` (a saved head that no longer fits is initialised anew instead).
    pub fn remove(&mut self, name: &str) -> bool {
        self.shapes.remove(name).is_some()
    }

    /// The tensor `name`, float dtypes converted to f32; `None` when not offered.
    pub fn load(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(source) = self.source.as_ref().filter(|_| self.contains(name)) else {
            return Ok(None);
        };
        let tensor = source
            .load(name, &self.device)
            .map_err(|e| ModelError::Safetensors {
                path: self.path.clone(),
                message: format!("tensor `{name}`: {e}"),
            })?;
        let tensor = if tensor.dtype().is_float() && tensor.dtype() != DType::F32 {
            tensor.to_dtype(DType::F32)?
        } else {
            tensor
        };
        Ok(Some(tensor))
    }

    /// Loads `name` and stops offering it (tensors that are not parameters, such as running statistics).
    pub fn take(&mut self, name: &str) -> Result<Option<Tensor>> {
        let tensor = self.load(name)?;
        self.remove(name);
        Ok(tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path) -> PathBuf {
        let d = Device::Cpu;
        let tensors: HashMap<String, Tensor> = [
            (
                "a.weight",
                Tensor::new(&[[1f32, 2.], [3., 4.]], &d).unwrap(),
            ),
            (
                "b.half",
                Tensor::new(&[0.5f32, -1.5], &d)
                    .unwrap()
                    .to_dtype(DType::F16)
                    .unwrap(),
            ),
            ("c.count", Tensor::new(&[7i64], &d).unwrap()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let path = dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        path
    }

    #[test]
    fn tensors_are_read_on_demand_as_f32() {
        let dir = tempfile::tempdir().unwrap();
        let mut ckpt = Checkpoint::read(&write(dir.path()), &Device::Cpu).unwrap();
        assert_eq!(ckpt.shape("a.weight"), Some(&[2, 2][..]));
        let half = ckpt.load("b.half").unwrap().unwrap();
        assert_eq!(half.dtype(), DType::F32);
        assert_eq!(half.to_vec1::<f32>().unwrap(), [0.5, -1.5]);
        let count = ckpt.take("c.count").unwrap().unwrap();
        assert_eq!(count.dtype(), DType::I64, "integers keep their dtype");
        assert!(!ckpt.contains("c.count") && ckpt.load("c.count").unwrap().is_none());
        assert!(ckpt.remove("a.weight") && !ckpt.remove("a.weight"));
        let mut names: Vec<&str> = ckpt.names().collect();
        names.sort();
        assert_eq!(names, ["b.half"]);
    }

    #[test]
    fn a_file_that_is_not_safetensors_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, b"not a safetensors file").unwrap();
        match Checkpoint::read(&path, &Device::Cpu) {
            Err(ModelError::Safetensors { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected a safetensors error, got {other:?}"),
        }
        let missing = dir.path().join("absent.safetensors");
        assert!(matches!(
            Checkpoint::read(&missing, &Device::Cpu),
            Err(ModelError::MissingFile { .. })
        ));
    }
}
