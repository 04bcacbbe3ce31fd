//! Margin difficulty of a pair, normalised to [0, 1] by rank over the corpus (0 easiest).
//!
//! The raw key is the score margin when the data has scores, else the token separation
//! (edit distance relative to the pair's length): in both, a larger key is an easier pair.

use serde::{Deserialize, Serialize};

/// Where the difficulty of a run comes from; recorded in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifficultySource {
    /// `score_chosen - score_rejected`: a wide margin is easy.
    ScoreMargin,
    /// `edit_distance / (len(chosen) + len(rejected))`: pairs a few tokens apart are hard.
    TokenSeparation,
}

/// The separation key of a pair: the share of its tokens outside the common subsequence.
#[must_use]
pub fn separation_key(edit_distance: u32, chosen_len: usize, rejected_len: usize) -> f64 {
    let total = chosen_len + rejected_len;
    if total == 0 { 0.0 } else { f64::from(edit_distance) / total as f64 }
}

/// Maps raw keys to difficulties by their rank among all keys of the corpus.
#[derive(Debug, Clone, Default)]
pub struct RankScale {
    sorted: Vec<f64>,
}

impl RankScale {
    /// Builds the scale from every pair's key (any order). NaN keys sort last.
    #[must_use]
    pub fn new(mut keys: Vec<f64>) -> Self {
        keys.sort_by(f64::total_cmp);
        Self { sorted: keys }
    }

    /// Every key of the corpus, sorted (what [`new`](Self::new) needs to rebuild the scale).
    #[must_use]
    pub fn sorted_keys(&self) -> &[f64] {
        &self.sorted
    }

    /// The difficulty of a pair with `key`: 1 for the smallest key (hardest), 0 for the
    /// largest (easiest); tied keys share their average rank. A corpus of one pair gives 0.5.
    #[must_use]
    pub fn difficulty(&self, key: f64) -> f32 {
        let n = self.sorted.len();
        if n <= 1 {
            return 0.5;
        }
        let below = self.sorted.partition_point(|&other| other.total_cmp(&key).is_lt());
        let not_above = self.sorted.partition_point(|&other| other.total_cmp(&key).is_le());
        let average_rank = (below + not_above.max(below + 1) - 1) as f64 / 2.0;
        (1.0 - average_rank / (n - 1) as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_run_from_hard_to_easy() {
        let scale = RankScale::new(vec![0.3, 0.1, 0.2]);
        assert!((scale.difficulty(0.1) - 1.0).abs() < 1e-6);
        assert!((scale.difficulty(0.2) - 0.5).abs() < 1e-6);
        assert!(scale.difficulty(0.3).abs() < 1e-6);
    }

    #[test]
    fn ties_share_their_average_rank() {
        let scale = RankScale::new(vec![1.0, 1.0, 2.0, 0.0]);
        // ranks: 0.0 -> 0, 1.0 -> (1 + 2) / 2 = 1.5, 2.0 -> 3; difficulty = 1 - rank / 3
        assert!((scale.difficulty(1.0) - 0.5).abs() < 1e-6);
        assert!((scale.difficulty(0.0) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn one_pair_is_middling() {
        assert!((RankScale::new(vec![4.0]).difficulty(4.0) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn separation_is_the_share_of_differing_tokens() {
        assert!((separation_key(2, 10, 10) - 0.1).abs() < 1e-12);
        assert!(separation_key(0, 0, 0).abs() < 1e-12);
    }
}
