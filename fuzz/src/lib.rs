//! Helpers shared by the fuzz targets: turning fuzzer bytes into the pieces an entry point takes, and a scratch
//! file for entry points that only read from disk.

use std::path::{Path, PathBuf};

/// The fuzzer's bytes as text. Invalid UTF-8 is replaced rather than rejected, so no mutation is wasted; the
/// readers that take raw bytes (data files, images, safetensors) get the bytes themselves.
pub fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The text split at NUL characters: the first piece is the main input (a template, a recipe), the rest are
/// extra arguments (slot values, messages, `--set` overrides). NUL never appears in the inputs themselves in
/// practice, so the seeds stay readable files.
pub fn pieces(text: &str) -> (&str, Vec<&str>) {
    let mut parts = text.split('\0');
    let head = parts.next().unwrap_or_default();
    (head, parts.collect())
}

/// A file in a per-process scratch folder, rewritten with `bytes` on every call (the data readers, checkpoint
/// reader and image decoder's file path take paths). Named `name`, whose extension picks the format.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = scratch_dir();
    let path = dir.join(name);
    // A fuzz harness has no caller to report to: failing to write the scratch file is a broken machine, not a
    // finding, so it aborts loudly.
    if let Err(err) = std::fs::write(&path, bytes) {
        panic!("cannot write scratch file {}: {err}", path.display());
    }
    path
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mosaic-fuzz-{}", std::process::id()));
    if !Path::new(&dir).is_dir()
        && let Err(err) = std::fs::create_dir_all(&dir)
    {
        panic!("cannot create scratch folder {}: {err}", dir.display());
    }
    dir
}
