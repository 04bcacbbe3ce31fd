//! Corpus token rarity: in how many pairs each token id appears.

use serde::{Deserialize, Serialize};

/// Document frequency of every token id over a set of pairs, where a document is one pair:
/// a token counts once per pair whether it appears in the chosen completion, the rejected
/// one, or both.
///
/// Counting is a first pass over the whole corpus, one accumulator per thread or per part,
/// combined with [`merge`](Self::merge). An accumulator keeps a "last pair seen" stamp per
/// token id, so deduplicating a pair's tokens costs one array read per token and no hashing.
///
/// Serializes as `{"documents": N, "counts": [df of id 0, df of id 1, ...]}` (the stamps
/// are scratch and are not written); deserializing rejects a count above the document count.
/// Counts saturate at `u32::MAX` (4.29 billion pairs).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Counts")]
pub struct DocumentFrequency {
    /// Pairs counted.
    documents: u64,
    /// Pairs containing each token id; ids past the end have count 0.
    counts: Vec<u32>,
    /// Per token id, the stamp of the last pair it was counted for.
    #[serde(skip)]
    last_seen: Vec<u32>,
    /// The stamp of the pair being counted; never 0, so a fresh `last_seen` matches nothing.
    #[serde(skip)]
    stamp: u32,
}

/// The serialized form of [`DocumentFrequency`], checked on the way in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Counts {
    documents: u64,
    counts: Vec<u32>,
}

impl TryFrom<Counts> for DocumentFrequency {
    type Error = String;

    fn try_from(Counts { documents, counts }: Counts) -> Result<Self, Self::Error> {
        match counts.iter().position(|&count| u64::from(count) > documents) {
            Some(token) => Err(format!(
                "token {token} is counted in {} documents but only {documents} were counted",
                counts[token]
            )),
            None => Ok(Self { documents, counts, last_seen: Vec::new(), stamp: 0 }),
        }
    }
}

impl PartialEq for DocumentFrequency {
    /// Equal when they hold the same document count and the same count for every token id;
    /// trailing zero counts and the scratch stamps do not matter.
    fn eq(&self, other: &Self) -> bool {
        fn trimmed(counts: &[u32]) -> &[u32] {
            let end = counts.iter().rposition(|&count| count != 0).map_or(0, |last| last + 1);
            &counts[..end]
        }
        self.documents == other.documents && trimmed(&self.counts) == trimmed(&other.counts)
    }
}

impl Eq for DocumentFrequency {}

impl DocumentFrequency {
    /// An empty count with room for ids below `vocab_size` (larger ids still work: the
    /// tables grow).
    #[must_use]
    pub fn new(vocab_size: usize) -> Self {
        Self { documents: 0, counts: vec![0; vocab_size], last_seen: vec![0; vocab_size], stamp: 0 }
    }

    /// Counts one pair: every distinct token id of `chosen` and `rejected` once.
    pub fn add_pair(&mut self, chosen: &[u32], rejected: &[u32]) {
        self.documents = self.documents.saturating_add(1);
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // After 2^32 − 1 pairs the stamps wrap: forget them all and start again at 1.
            self.last_seen.fill(0);
            self.stamp = 1;
        }
        for &token in chosen.iter().chain(rejected) {
            let index = token as usize;
            if index >= self.last_seen.len() {
                self.grow(index + 1);
            }
            if self.last_seen[index] != self.stamp {
                self.last_seen[index] = self.stamp;
                self.counts[index] = self.counts[index].saturating_add(1);
            }
        }
    }

    /// Adds the counts of `other` (pairs counted elsewhere) to these.
    pub fn merge(&mut self, other: &Self) {
        self.documents = self.documents.saturating_add(other.documents);
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (count, other_count) in self.counts.iter_mut().zip(&other.counts) {
            *count = count.saturating_add(*other_count);
        }
    }

    /// Counts made elsewhere: `counts[t]` pairs of `documents` hold token id `t`. A count
    /// above `documents` is an error naming the token.
    pub fn from_counts(documents: u64, counts: Vec<u32>) -> Result<Self, String> {
        Self::try_from(Counts { documents, counts })
    }

    /// The pairs holding each token id, by id (ids past the end: none).
    #[must_use]
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    /// Number of pairs counted.
    #[must_use]
    pub fn documents(&self) -> u64 {
        self.documents
    }

    /// Number of pairs containing `token`.
    #[must_use]
    pub fn document_frequency(&self, token: u32) -> u32 {
        self.counts.get(token as usize).copied().unwrap_or(0)
    }

    /// Smoothed inverse document frequency, `ln((N + 1) / (df + 1)) + 1`: 1 for a token in
    /// every pair, `ln(N + 1) + 1` for a token never seen, never below 1.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "document counts stay far below 2^52")]
    pub fn idf(&self, token: u32) -> f32 {
        let documents = self.documents as f64 + 1.0;
        let frequency = f64::from(self.document_frequency(token)) + 1.0;
        ((documents / frequency).ln() + 1.0).max(1.0) as f32
    }

    /// Makes both tables cover ids below `len`, keeping the counts; a table restored by
    /// serde has no stamps yet, so `last_seen` may be shorter than `counts`.
    fn grow(&mut self, len: usize) {
        let len = len.max(self.counts.len());
        self.counts.resize(len, 0);
        self.last_seen.resize(len, 0);
    }
}

#[cfg(test)]
mod tests;
