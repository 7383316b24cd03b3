//! Prompt templates with named slots.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hash};

use crate::PromptError;

/// The name of the special slot that is rendered as the mask token.
pub const MASK_SLOT: &str = "mask";

/// The mask token used when none is configured.
pub const DEFAULT_MASK_TOKEN: &str = "[MASK]";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Slot(String),
    Mask,
}

/// A prompt template such as `"Review: {text} It was {mask}."`.
///
/// * `{name}` is a named slot, filled from the values given to
///   [`render`](Template::render). Names are made of ASCII letters, digits,
///   `_`, `-` and `.`.
/// * `{mask}` is special: it is rendered as the mask token
///   ([`DEFAULT_MASK_TOKEN`] unless changed with
///   [`with_mask_token`](Template::with_mask_token)).
/// * `{{` and `}}` stand for literal `{` and `}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
    mask_token: String,
}

impl Template {
    /// Parses a template.
    ///
    /// Fails on an unclosed `{`, a lone `}`, an empty slot `{}` or a slot
    /// name with characters other than ASCII letters, digits, `_`, `-`, `.`.
    pub fn parse(source: &str) -> Result<Self, PromptError> {
        let err = |position: usize, message: String| PromptError::Parse {
            template: source.to_owned(),
            position,
            message,
        };
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((pos, c)) = chars.next() {
            match c {
                '{' if matches!(chars.peek(), Some((_, '{'))) => {
                    chars.next();
                    text.push('{');
                }
                '}' if matches!(chars.peek(), Some((_, '}'))) => {
                    chars.next();
                    text.push('}');
                }
                '}' => {
                    return Err(err(
                        pos,
                        "`}` without a matching `{` (write `}}` for a literal brace)".into(),
                    ));
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(err(
                            pos,
                            "`{` is never closed (write `{{` for a literal brace)".into(),
                        ));
                    }
                    if name.is_empty() {
                        return Err(err(pos, "empty slot `{}`".into()));
                    }
                    if let Some(bad) = name.chars().find(|c| !is_slot_char(*c)) {
                        return Err(err(
                            pos,
                            format!(
                                "invalid character {bad:?} in slot name {name:?} \
                                 (use ASCII letters, digits, `_`, `-`, `.`)"
                            ),
                        ));
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    if name == MASK_SLOT {
                        pieces.push(Piece::Mask);
                    } else {
                        pieces.push(Piece::Slot(name));
                    }
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self {
            source: source.to_owned(),
            pieces,
            mask_token: DEFAULT_MASK_TOKEN.to_owned(),
        })
    }

    /// Uses `mask_token` (for instance `"<mask>"`) for `{mask}`.
    pub fn with_mask_token(mut self, mask_token: impl Into<String>) -> Self {
        self.mask_token = mask_token.into();
        self
    }

    /// The mask token that `{mask}` renders as.
    pub fn mask_token(&self) -> &str {
        &self.mask_token
    }

    /// The template text as parsed.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The distinct named slots in order of first appearance, without `mask`.
    pub fn slots(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for piece in &self.pieces {
            if let Piece::Slot(name) = piece
                && !out.contains(&name.as_str())
            {
                out.push(name);
            }
        }
        out
    }

    /// Whether the template has a `{mask}` slot.
    pub fn has_mask(&self) -> bool {
        self.mask_count() > 0
    }

    /// How many times `{mask}` appears.
    pub fn mask_count(&self) -> usize {
        self.pieces.iter().filter(|p| **p == Piece::Mask).count()
    }

    /// Checks that every named slot is among `available` (for instance the
    /// fields of a data set), so that mistakes show before any rendering.
    pub fn check_slots<S: AsRef<str>>(&self, available: &[S]) -> Result<(), PromptError> {
        for slot in self.slots() {
            if !available.iter().any(|a| a.as_ref() == slot) {
                return Err(PromptError::UnknownSlot {
                    slot: slot.to_owned(),
                    available: available.iter().map(|a| a.as_ref().to_owned()).collect(),
                });
            }
        }
        Ok(())
    }

    /// Renders the template, `{mask}` becoming the mask token.
    ///
    /// Values not used by the template are ignored; a slot without a value is
    /// an error naming the slot and the values that were available.
    pub fn render<V: SlotValues + ?Sized>(&self, values: &V) -> Result<String, PromptError> {
        self.render_inner(values, &self.mask_token)
    }

    /// Renders the template with `{mask}` replaced by `fill` (for instance the
    /// answer word of a demonstration).
    pub fn render_filled<V: SlotValues + ?Sized>(
        &self,
        values: &V,
        fill: &str,
    ) -> Result<String, PromptError> {
        self.render_inner(values, fill)
    }

    /// Renders the template, looking values up with a function.
    ///
    /// ```
    /// # use mosaic_prompt::Template;
    /// let t = Template::parse("{a}+{b}")?;
    /// let s = t.render_with(|name: &str| match name {
    ///     "a" => Some("1"),
    ///     "b" => Some("2"),
    ///     _ => None,
    /// })?;
    /// assert_eq!(s, "1+2");
    /// # Ok::<(), mosaic_prompt::PromptError>(())
    /// ```
    pub fn render_with<F, S>(&self, lookup: F) -> Result<String, PromptError>
    where
        F: Fn(&str) -> Option<S>,
        S: AsRef<str>,
    {
        self.render(&FnValues(lookup))
    }

    fn render_inner<V: SlotValues + ?Sized>(
        &self,
        values: &V,
        mask: &str,
    ) -> Result<String, PromptError> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Mask => out.push_str(mask),
                Piece::Slot(name) => match values.value(name) {
                    Some(v) => out.push_str(v.as_ref()),
                    None => {
                        let mut available = values.names();
                        available.sort();
                        return Err(PromptError::MissingSlot {
                            slot: name.clone(),
                            available,
                        });
                    }
                },
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Template {
    type Err = PromptError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn is_slot_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// A source of slot values for [`Template::render`].
///
/// Implemented for `HashMap` and `BTreeMap` with string-like keys and values,
/// for slices of `(name, value)` pairs, and (through
/// [`Template::render_with`]) for lookup functions.
pub trait SlotValues {
    /// The value of slot `name`, if any.
    fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>>;

    /// The names that have values, for error messages (may be empty when
    /// unknown).
    fn names(&self) -> Vec<String>;
}

impl<K, V, H> SlotValues for HashMap<K, V, H>
where
    K: Borrow<str> + Hash + Eq,
    V: AsRef<str>,
    H: BuildHasher,
{
    fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.get(name).map(|v| v.as_ref().into())
    }

    fn names(&self) -> Vec<String> {
        self.keys().map(|k| k.borrow().to_owned()).collect()
    }
}

impl<K, V> SlotValues for BTreeMap<K, V>
where
    K: Borrow<str> + Ord,
    V: AsRef<str>,
{
    fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.get(name).map(|v| v.as_ref().into())
    }

    fn names(&self) -> Vec<String> {
        self.keys().map(|k| k.borrow().to_owned()).collect()
    }
}

impl<K, V> SlotValues for [(K, V)]
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v.as_ref().into())
    }

    fn names(&self) -> Vec<String> {
        self.iter().map(|(k, _)| k.as_ref().to_owned()).collect()
    }
}

impl<K, V, const N: usize> SlotValues for [(K, V); N]
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.as_slice().value(name)
    }

    fn names(&self) -> Vec<String> {
        self.as_slice().names()
    }
}

impl<K, V> SlotValues for Vec<(K, V)>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.as_slice().value(name)
    }

    fn names(&self) -> Vec<String> {
        self.as_slice().names()
    }
}

/// Slot values from a lookup function (names unknown for error messages).
pub struct FnValues<F>(pub F);

impl<F, S> SlotValues for FnValues<F>
where
    F: Fn(&str) -> Option<S>,
    S: AsRef<str>,
{
    fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        (self.0)(name).map(|v| v.as_ref().to_owned().into())
    }

    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}
