//! Margin difficulty of a pair, normalised to [0, 1] by rank over the corpus (0 easiest).
//!
//! The raw key is the score margin when the data has scores, else the token separation
//! (edit distance relative to the pair's length): in both, a larger key is an easier pair.
//! Score margins are often small integers, so most pairs would tie on them: ties in the
//! margin are broken by the token separation.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// Where the difficulty of a run comes from; recorded in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifficultySource {
    /// `score_chosen - score_rejected`: a wide margin is easy. Ties are broken by token
    /// separation.
    ScoreMargin,
    /// `edit_distance / (len(chosen) + len(rejected))`: pairs a few tokens apart are hard.
    TokenSeparation,
}

impl DifficultySource {
    /// The rank key of a pair with score margin `margin` (`None` when unscored) and token
    /// separation `separation`.
    #[must_use]
    pub fn key(self, margin: Option<f64>, separation: f64) -> DifficultyKey {
        match self {
            // Never `None` under this source, which needs every pair scored.
            Self::ScoreMargin => {
                DifficultyKey { primary: margin.unwrap_or(f64::NAN), tiebreak: separation }
            }
            Self::TokenSeparation => DifficultyKey { primary: separation, tiebreak: 0.0 },
        }
    }
}

/// The rank key of a pair: ordered by `primary`, then by `tiebreak`; smaller is harder.
#[derive(Debug, Clone, Copy)]
pub struct DifficultyKey {
    /// The key of the run's [`DifficultySource`].
    pub primary: f64,
    /// What breaks ties in `primary`: the token separation under
    /// [`DifficultySource::ScoreMargin`], else 0.
    pub tiebreak: f64,
}

impl DifficultyKey {
    /// Lexicographic order, each component by [`f64::total_cmp`] (NaN sorts last).
    #[must_use]
    pub fn total_cmp(&self, other: &Self) -> Ordering {
        self.primary
            .total_cmp(&other.primary)
            .then_with(|| self.tiebreak.total_cmp(&other.tiebreak))
    }
}

/// The separation key of a pair: the share of its tokens outside the common subsequence.
#[must_use]
pub fn separation_key(edit_distance: u32, chosen_len: usize, rejected_len: usize) -> f64 {
    let total = chosen_len + rejected_len;
    if total == 0 { 0.0 } else { f64::from(edit_distance) / total as f64 }
}

/// Maps rank keys to difficulties by their rank among all keys of the corpus.
#[derive(Debug, Clone, Default)]
pub struct RankScale {
    sorted: Vec<DifficultyKey>,
}

impl RankScale {
    /// Builds the scale from every pair's key (any order).
    #[must_use]
    pub fn new(mut keys: Vec<DifficultyKey>) -> Self {
        keys.sort_by(DifficultyKey::total_cmp);
        Self { sorted: keys }
    }

    /// Every key of the corpus, sorted (what [`new`](Self::new) needs to rebuild the scale).
    #[must_use]
    pub fn sorted_keys(&self) -> &[DifficultyKey] {
        &self.sorted
    }

    /// The difficulty of a pair with `key`: 1 for the smallest key (hardest), 0 for the
    /// largest (easiest); tied keys share their average rank. A corpus of one pair gives 0.5.
    #[must_use]
    pub fn difficulty(&self, key: DifficultyKey) -> f32 {
        let n = self.sorted.len();
        if n <= 1 {
            return 0.5;
        }
        let below = self.sorted.partition_point(|other| other.total_cmp(&key).is_lt());
        let not_above = self.sorted.partition_point(|other| other.total_cmp(&key).is_le());
        let average_rank = (below + not_above.max(below + 1) - 1) as f64 / 2.0;
        (1.0 - average_rank / (n - 1) as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn separations(values: &[f64]) -> Vec<DifficultyKey> {
        values.iter().map(|&value| DifficultySource::TokenSeparation.key(None, value)).collect()
    }

    fn difficulty_of(scale: &RankScale, separation: f64) -> f32 {
        scale.difficulty(DifficultySource::TokenSeparation.key(None, separation))
    }

    #[test]
    fn ranks_run_from_hard_to_easy() {
        let scale = RankScale::new(separations(&[0.3, 0.1, 0.2]));
        assert!((difficulty_of(&scale, 0.1) - 1.0).abs() < 1e-6);
        assert!((difficulty_of(&scale, 0.2) - 0.5).abs() < 1e-6);
        assert!(difficulty_of(&scale, 0.3).abs() < 1e-6);
    }

    #[test]
    fn ties_share_their_average_rank() {
        let scale = RankScale::new(separations(&[1.0, 1.0, 2.0, 0.0]));
        // ranks: 0.0 -> 0, 1.0 -> (1 + 2) / 2 = 1.5, 2.0 -> 3; difficulty = 1 - rank / 3
        assert!((difficulty_of(&scale, 1.0) - 0.5).abs() < 1e-6);
        assert!((difficulty_of(&scale, 0.0) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn separation_breaks_ties_in_the_margin() {
        let pairs = [(1.0, 0.1), (1.0, 0.2), (1.0, 0.3), (2.0, 0.1)];
        let keys: Vec<DifficultyKey> = pairs
            .iter()
            .map(|&(margin, separation)| {
                DifficultySource::ScoreMargin.key(Some(margin), separation)
            })
            .collect();
        let scale = RankScale::new(keys.clone());
        let difficulties: Vec<f32> = keys.into_iter().map(|key| scale.difficulty(key)).collect();
        // ranks 0, 1, 2, 3: the margin first, the separation among equal margins
        for (difficulty, expected) in difficulties.into_iter().zip([1.0, 2.0 / 3.0, 1.0 / 3.0, 0.0])
        {
            assert!((difficulty - expected).abs() < 1e-6, "{difficulty} != {expected}");
        }
    }

    #[test]
    fn pairs_tied_on_margin_and_separation_share_their_average_rank() {
        let key =
            |margin: f64, separation| DifficultySource::ScoreMargin.key(Some(margin), separation);
        let scale = RankScale::new(vec![key(1.0, 0.2), key(1.0, 0.2), key(1.0, 0.1)]);
        // ranks: (1, 0.1) -> 0, (1, 0.2) -> (1 + 2) / 2 = 1.5; difficulty = 1 - rank / 2
        assert!((scale.difficulty(key(1.0, 0.2)) - 0.25).abs() < 1e-6);
        assert!((scale.difficulty(key(1.0, 0.1)) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn one_pair_is_middling() {
        let scale = RankScale::new(separations(&[4.0]));
        assert!((difficulty_of(&scale, 4.0) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn separation_is_the_share_of_differing_tokens() {
        assert!((separation_key(2, 10, 10) - 0.1).abs() < 1e-12);
        assert!(separation_key(0, 0, 0).abs() < 1e-12);
    }
}
