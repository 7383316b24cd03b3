//! k-shot demonstrations drawn from a training set.

use std::collections::BTreeMap;

use crate::{LabelDescriptions, PromptError, SlotValues, Template, Verbalizer};

/// How a demonstration shows its answer.
#[derive(Debug, Clone, Copy)]
pub enum Answer<'a> {
    /// The first word of the label in the verbalizer.
    Verbalizer(&'a Verbalizer),
    /// The label's description.
    Description(&'a LabelDescriptions),
}

impl Answer<'_> {
    /// The text that stands for `label`.
    pub fn text(&self, label: &str) -> Result<&str, PromptError> {
        match self {
            Answer::Verbalizer(v) => v.first_word(label),
            Answer::Description(d) => d.try_description(label),
        }
    }
}

/// Renders one demonstration: the template filled with `values`, with
/// `{mask}` replaced by the answer for `label`. When the template has no
/// `{mask}`, the answer is appended after a space.
pub fn render_demonstration<V: SlotValues + ?Sized>(
    template: &Template,
    values: &V,
    label: &str,
    answer: Answer<'_>,
) -> Result<String, PromptError> {
    let text = answer.text(label)?;
    if template.has_mask() {
        template.render_filled(values, text)
    } else {
        let mut s = template.render(values)?;
        s.push(' ');
        s.push_str(text);
        Ok(s)
    }
}

/// Picks `k` demonstrations per label from a training set and prepends them
/// to a prompt.
///
/// Selection is deterministic for a given seed: it uses its own SplitMix64
/// generator (so the result does not change with the version of any random
/// number crate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FewShot {
    /// Demonstrations per label (a label with fewer examples gives all it
    /// has; 0 means no demonstrations).
    pub k: usize,
    /// Seed of the selection.
    pub seed: u64,
    /// Put between demonstrations and between the last one and the query.
    pub separator: String,
}

impl FewShot {
    /// `k` demonstrations per label, chosen with `seed`, separated by a blank
    /// line.
    pub fn new(k: usize, seed: u64) -> Self {
        Self {
            k,
            seed,
            separator: "\n\n".to_owned(),
        }
    }

    /// Uses `separator` between demonstrations and before the query.
    pub fn with_separator(mut self, separator: impl Into<String>) -> Self {
        self.separator = separator.into();
        self
    }

    /// Chooses demonstrations from a training set whose `i`-th example has
    /// label `labels[i]`; returns indices into `labels`.
    ///
    /// For each label (in sorted order) its examples are shuffled with the
    /// seed and the first `k` are kept; the chosen indices are then shuffled
    /// together, so that labels are not always shown in the same order.
    /// `exclude` (for instance the index of the query itself when it comes
    /// from the same training set) is never chosen.
    pub fn select<S: AsRef<str>>(
        &self,
        labels: &[S],
        exclude: Option<usize>,
    ) -> Result<Vec<usize>, PromptError> {
        if let Some(i) = exclude
            && i >= labels.len()
        {
            return Err(PromptError::IndexOutOfRange {
                index: i,
                len: labels.len(),
            });
        }
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, label) in labels.iter().enumerate() {
            if Some(i) != exclude {
                groups.entry(label.as_ref()).or_default().push(i);
            }
        }
        let mut rng = SplitMix64::new(self.seed);
        let mut chosen = Vec::new();
        for (_, mut indices) in groups {
            rng.shuffle(&mut indices);
            indices.truncate(self.k);
            chosen.extend(indices);
        }
        rng.shuffle(&mut chosen);
        Ok(chosen)
    }

    /// Renders demonstrations (slot values and label of each) and joins them
    /// with the separator.
    pub fn demonstrations<V, L>(
        &self,
        template: &Template,
        demos: &[(V, L)],
        answer: Answer<'_>,
    ) -> Result<String, PromptError>
    where
        V: SlotValues,
        L: AsRef<str>,
    {
        let rendered = demos
            .iter()
            .map(|(values, label)| render_demonstration(template, values, label.as_ref(), answer))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rendered.join(&self.separator))
    }

    /// The full prompt: the demonstrations, the separator, then the query
    /// rendered with its mask token. Without demonstrations it is the
    /// rendered query alone.
    pub fn prompt<Q, V, L>(
        &self,
        template: &Template,
        query: &Q,
        demos: &[(V, L)],
        answer: Answer<'_>,
    ) -> Result<String, PromptError>
    where
        Q: SlotValues + ?Sized,
        V: SlotValues,
        L: AsRef<str>,
    {
        let query = template.render(query)?;
        if demos.is_empty() {
            return Ok(query);
        }
        let mut out = self.demonstrations(template, demos, answer)?;
        out.push_str(&self.separator);
        out.push_str(&query);
        Ok(out)
    }
}

/// SplitMix64: a tiny, stable pseudo-random generator.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (`n > 0`), by rejection to avoid bias.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Fisher–Yates shuffle.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}
