//! Reading records from JSONL and CSV files.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{DataError, Result};

/// The format of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line (blank lines are skipped).
    Jsonl,
    /// Comma-separated values with a header row naming the fields.
    Csv,
    /// Tab-separated values with a header row naming the fields.
    Tsv,
}

impl Format {
    /// The format given by the file extension: `.jsonl`, `.ndjson` and `.json`
    /// (read as JSON lines) → [`Format::Jsonl`], `.csv` → [`Format::Csv`],
    /// `.tsv` → [`Format::Tsv`].
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("jsonl" | "ndjson" | "json") => Ok(Format::Jsonl),
            Some("csv") => Ok(Format::Csv),
            Some("tsv") => Ok(Format::Tsv),
            _ => Err(DataError::UnknownFormat {
                path: path.to_owned(),
            }),
        }
    }
}

/// One record (a JSON object or a CSV row) with its location.
pub(crate) struct Record<'a> {
    pub path: &'a Path,
    pub line: usize,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Json(serde_json::Map<String, Value>),
    Csv {
        headers: &'a csv::StringRecord,
        row: csv::StringRecord,
    },
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Record<'_> {
    fn missing(&self, field: &str) -> DataError {
        DataError::MissingField {
            path: self.path.to_owned(),
            line: self.line,
            field: field.to_owned(),
        }
    }

    fn wrong(&self, field: &str, expected: &'static str, found: &'static str) -> DataError {
        DataError::WrongType {
            path: self.path.to_owned(),
            line: self.line,
            field: field.to_owned(),
            expected,
            found,
        }
    }

    pub fn empty(&self, field: &str) -> DataError {
        DataError::EmptyValue {
            path: self.path.to_owned(),
            line: self.line,
            field: field.to_owned(),
        }
    }

    fn csv_cell(
        &self,
        headers: &csv::StringRecord,
        row: &csv::StringRecord,
        field: &str,
    ) -> Result<String> {
        // A missing column is a problem of the header row, line 1.
        let i = headers
            .iter()
            .position(|h| h == field)
            .ok_or_else(|| DataError::MissingField {
                path: self.path.to_owned(),
                line: 1,
                field: field.to_owned(),
            })?;
        Ok(row.get(i).unwrap_or_default().to_owned())
    }

    /// A string field.
    pub fn string(&self, field: &str) -> Result<String> {
        match &self.kind {
            Kind::Json(map) => match map.get(field) {
                None => Err(self.missing(field)),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(v) => Err(self.wrong(field, "a string", json_kind(v))),
            },
            Kind::Csv { headers, row } => self.csv_cell(headers, row, field),
        }
    }

    /// A label: a non-empty string, or (JSON) an integer written in decimal.
    pub fn label(&self, field: &str) -> Result<String> {
        let s = match &self.kind {
            Kind::Json(map) => match map.get(field) {
                None => return Err(self.missing(field)),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                Some(v @ Value::Number(_)) => {
                    return Err(self.wrong(field, "a string or an integer", json_kind(v)));
                }
                Some(v) => return Err(self.wrong(field, "a string or an integer", json_kind(v))),
            },
            Kind::Csv { headers, row } => self.csv_cell(headers, row, field)?,
        };
        if s.is_empty() {
            return Err(self.empty(field));
        }
        Ok(s)
    }

    /// A list of strings: a JSON array of strings; in CSV a cell holding a
    /// JSON array of strings (when it starts with `[`) or whitespace-separated
    /// items.
    pub fn string_list(&self, field: &str) -> Result<Vec<String>> {
        const EXPECTED: &str = "a list of strings";
        let from_array = |items: &[Value]| -> Result<Vec<String>> {
            items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(self.wrong(field, "a list of strings", json_kind(v))),
                })
                .collect()
        };
        match &self.kind {
            Kind::Json(map) => match map.get(field) {
                None => Err(self.missing(field)),
                Some(Value::Array(items)) => from_array(items),
                Some(v) => Err(self.wrong(field, EXPECTED, json_kind(v))),
            },
            Kind::Csv { headers, row } => {
                let cell = self.csv_cell(headers, row, field)?;
                if cell.trim_start().starts_with('[') {
                    match serde_json::from_str::<Value>(&cell) {
                        Ok(Value::Array(items)) => from_array(&items),
                        _ => Err(self.wrong(field, EXPECTED, "a malformed JSON array")),
                    }
                } else {
                    Ok(cell.split_whitespace().map(str::to_owned).collect())
                }
            }
        }
    }
}

/// Calls `f` on every record of `path` in order.
pub(crate) fn for_each_record(
    path: &Path,
    format: Option<Format>,
    mut f: impl FnMut(&Record<'_>) -> Result<()>,
) -> Result<usize> {
    let format = match format {
        Some(f) => f,
        None => Format::from_path(path)?,
    };
    let io_err = |source| DataError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut count = 0;
    match format {
        Format::Jsonl => {
            let reader = BufReader::new(file);
            for (i, line) in reader.lines().enumerate() {
                let line_no = i + 1;
                let line = line.map_err(|source| match source.kind() {
                    std::io::ErrorKind::InvalidData => DataError::InvalidJson {
                        path: path.to_owned(),
                        line: line_no,
                        message: "not valid UTF-8".into(),
                    },
                    _ => io_err(source),
                })?;
                let text = if i == 0 {
                    line.trim_start_matches('\u{feff}')
                } else {
                    &line
                };
                if text.trim().is_empty() {
                    continue;
                }
                let value: Value =
                    serde_json::from_str(text).map_err(|e| DataError::InvalidJson {
                        path: path.to_owned(),
                        line: line_no,
                        message: e.to_string(),
                    })?;
                let map = match value {
                    Value::Object(map) => map,
                    v => {
                        return Err(DataError::NotAnObject {
                            path: path.to_owned(),
                            line: line_no,
                            found: json_kind(&v),
                        });
                    }
                };
                f(&Record {
                    path,
                    line: line_no,
                    kind: Kind::Json(map),
                })?;
                count += 1;
            }
        }
        Format::Csv | Format::Tsv => {
            let delimiter = if format == Format::Tsv { b'\t' } else { b',' };
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .delimiter(delimiter)
                .from_reader(file);
            let csv_err = |e: csv::Error| {
                let line = e.position().map(|p| p.line() as usize);
                let message = e.to_string();
                match e.into_kind() {
                    csv::ErrorKind::Io(source) => io_err(source),
                    _ => DataError::Csv {
                        path: path.to_owned(),
                        line,
                        message,
                    },
                }
            };
            let mut headers = reader.headers().map_err(csv_err)?.clone();
            if let Some(first) = headers.get(0)
                && first.starts_with('\u{feff}')
            {
                let fixed: Vec<String> = headers
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        if i == 0 {
                            h.trim_start_matches('\u{feff}')
                        } else {
                            h
                        }
                        .to_owned()
                    })
                    .collect();
                headers = csv::StringRecord::from(fixed);
            }
            for row in reader.records() {
                let row = row.map_err(csv_err)?;
                let line = row.position().map_or(0, |p| p.line() as usize);
                f(&Record {
                    path,
                    line,
                    kind: Kind::Csv {
                        headers: &headers,
                        row,
                    },
                })?;
                count += 1;
            }
        }
    }
    if count == 0 {
        return Err(DataError::EmptyDataset {
            path: path.to_owned(),
        });
    }
    Ok(count)
}
