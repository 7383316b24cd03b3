//! Image data sets: image folders (`<root>/<label>/*.png|jpg`) and JSONL/CSV files whose records name an image
//! (relative to a data root, never outside it) with a label or a caption.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{ImageError, ImageResult};
use crate::dataset::Dataset;
use crate::error::DataError;
use crate::labels::LabelSet;
use crate::reader::{Format, for_each_record};

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// An image-classification example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageExample {
    /// The image file.
    pub path: PathBuf,
    /// The class id in the data set's [`LabelSet`].
    pub label: usize,
}

/// An image-classification data set.
pub type ImageDataset = Dataset<ImageExample>;

/// An image with its caption (for contrastive image-text training).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageTextExample {
    /// The image file.
    pub path: PathBuf,
    /// The caption.
    pub text: String,
}

/// Image-caption pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageTextDataset {
    /// The pairs, in file order.
    pub examples: Vec<ImageTextExample>,
}

/// How to read a JSONL/CSV file of image records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageRecordConfig {
    /// The field holding the image path. Default `image`.
    pub image_field: String,
    /// The field holding the class label (classification). Default `label`.
    pub label_field: String,
    /// The field holding the caption (image-text). Default `text`.
    pub text_field: String,
    /// The labels in class-id order; by default the labels found, sorted.
    pub labels: Option<Vec<String>>,
    /// The folder image paths are relative to, and must stay inside. Default: the data file's folder.
    pub root: Option<PathBuf>,
    /// The file format; by default told from the extension.
    pub format: Option<Format>,
}

impl Default for ImageRecordConfig {
    fn default() -> Self {
        ImageRecordConfig {
            image_field: "image".into(),
            label_field: "label".into(),
            text_field: "text".into(),
            labels: None,
            root: None,
            format: None,
        }
    }
}

fn is_image_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn sorted_entries(dir: &Path) -> ImageResult<Vec<PathBuf>> {
    let io = |cause| ImageError::Io {
        path: dir.to_path_buf(),
        cause,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if !is_hidden(&path) {
            entries.push(path);
        }
    }
    entries.sort();
    Ok(entries)
}

impl Dataset<ImageExample> {
    /// An image folder: each sub-folder of `root` is a label holding `.png`/`.jpg`/`.jpeg` files (other files
    /// and hidden entries are ignored). Labels are the folder names, sorted, unless `labels` gives them (then
    /// every folder must be one of them). A label folder without images is an error.
    pub fn from_folder(root: &Path, labels: Option<&[String]>) -> ImageResult<Self> {
        let mut classes = Vec::new();
        for path in sorted_entries(root)? {
            if path.is_dir() {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                classes.push((name, path));
            }
        }
        if classes.is_empty() {
            return Err(ImageError::NoClasses {
                path: root.to_path_buf(),
            });
        }
        let label_set = match labels {
            Some(l) => LabelSet::new(l.iter().cloned())?,
            None => LabelSet::collect_sorted(classes.iter().map(|(n, _)| n.as_str()))?,
        };
        let mut examples = Vec::new();
        for (name, dir) in &classes {
            let label = label_set.id(name).ok_or_else(|| DataError::UnknownLabel {
                path: dir.clone(),
                line: 0,
                label: name.clone(),
                known: label_set.names().to_vec(),
            })?;
            let before = examples.len();
            for path in sorted_entries(dir)? {
                if is_image_file(&path) {
                    examples.push(ImageExample { path, label });
                }
            }
            if examples.len() == before {
                return Err(ImageError::EmptyClass { path: dir.clone() });
            }
        }
        Ok(Dataset::new(examples, label_set))
    }

    /// Records of a JSONL/CSV file with an image path and a label (see [`ImageRecordConfig`]).
    pub fn from_records(path: &Path, config: &ImageRecordConfig) -> ImageResult<Self> {
        let root = data_root(path, config);
        let mut rows = Vec::new();
        let mut refused = None;
        let read = for_each_record(path, config.format, |record| {
            let image = record.string(&config.image_field)?;
            let label = record.label(&config.label_field)?;
            match resolve_inside(&root, &image) {
                Some(p) => rows.push((p, label, record.line)),
                None if refused.is_none() => refused = Some((record.line, image)),
                None => {}
            }
            Ok(())
        });
        finish(read, refused, path, &root)?;
        let label_set = match &config.labels {
            Some(l) => LabelSet::new(l.iter().cloned())?,
            None => LabelSet::collect_sorted(rows.iter().map(|(_, l, _)| l.as_str()))?,
        };
        let mut examples = Vec::with_capacity(rows.len());
        for (image, label, line) in rows {
            let id = label_set
                .id(&label)
                .ok_or_else(|| DataError::UnknownLabel {
                    path: path.to_path_buf(),
                    line,
                    label: label.clone(),
                    known: label_set.names().to_vec(),
                })?;
            examples.push(ImageExample {
                path: image,
                label: id,
            });
        }
        Ok(Dataset::new(examples, label_set))
    }
}

impl ImageTextDataset {
    /// Records of a JSONL/CSV file with an image path and a caption (see [`ImageRecordConfig`]).
    pub fn from_records(path: &Path, config: &ImageRecordConfig) -> ImageResult<Self> {
        let root = data_root(path, config);
        let mut examples = Vec::new();
        let mut refused = None;
        let read = for_each_record(path, config.format, |record| {
            let image = record.string(&config.image_field)?;
            let text = record.string(&config.text_field)?;
            match resolve_inside(&root, &image) {
                Some(p) => examples.push(ImageTextExample { path: p, text }),
                None if refused.is_none() => refused = Some((record.line, image)),
                None => {}
            }
            Ok(())
        });
        finish(read, refused, path, &root)?;
        Ok(ImageTextDataset { examples })
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }
}

fn data_root(path: &Path, config: &ImageRecordConfig) -> PathBuf {
    config.root.clone().unwrap_or_else(|| {
        path.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    })
}

/// A record error wins over a refused path only when it came first; otherwise the refusal is reported.
fn finish(
    read: crate::error::Result<usize>,
    refused: Option<(usize, String)>,
    path: &Path,
    root: &Path,
) -> ImageResult<()> {
    if let Some((line, image)) = refused {
        let record_error_first = matches!(&read, Err(e) if error_line(e).is_some_and(|l| l < line));
        if !record_error_first {
            return Err(ImageError::OutsideRoot {
                path: path.to_path_buf(),
                line,
                image,
                root: root.to_path_buf(),
            });
        }
    }
    read?;
    Ok(())
}

fn error_line(e: &DataError) -> Option<usize> {
    match e {
        DataError::InvalidJson { line, .. }
        | DataError::NotAnObject { line, .. }
        | DataError::MissingField { line, .. }
        | DataError::WrongType { line, .. }
        | DataError::EmptyValue { line, .. } => Some(*line),
        _ => None,
    }
}

/// `image` resolved against `root`, or `None` when it leaves `root` (through `..`, an absolute path elsewhere,
/// or a symbolic link pointing outside).
pub fn resolve_inside(root: &Path, image: &str) -> Option<PathBuf> {
    if image.is_empty() {
        return None;
    }
    let joined = root.join(image);
    let lexical = normalize(&joined);
    let root_norm = normalize(root);
    if !lexical.starts_with(&root_norm) {
        return None;
    }
    // Through symbolic links the file may still live elsewhere: compare real paths when it exists.
    if let (Ok(real), Ok(real_root)) = (joined.canonicalize(), root.canonicalize())
        && !real.starts_with(&real_root)
    {
        return None;
    }
    Some(joined)
}

/// Removes `.` and folds `..` into the preceding component, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    out.iter().collect()
}
