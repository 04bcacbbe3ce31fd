//! Property tests of the diff against a plain O(N·M) dynamic programme.

use proptest::prelude::*;

use super::{DiffOptions, diff_tokens};

/// LCS length by the textbook dynamic programme: the independent oracle.
fn lcs_len_dp(a: &[u32], b: &[u32]) -> usize {
    let mut table = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            table[i][j] = if a[i - 1] == b[j - 1] {
                table[i - 1][j - 1] + 1
            } else {
                table[i - 1][j].max(table[i][j - 1])
            };
        }
    }
    table[a.len()][b.len()]
}

fn unmasked(tokens: &[u32], mask: &[u8]) -> Vec<u32> {
    tokens.iter().zip(mask).filter(|(_, m)| **m == 0).map(|(t, _)| *t).collect()
}

fn unbounded() -> DiffOptions {
    DiffOptions { max_edit_distance: u32::MAX }
}

/// Token sequences over a small alphabet, so that matches are frequent.
fn tokens(max_len: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..6, 0..max_len)
}

/// A sequence and a copy with a few local edits, as in preference pairs.
fn near_pair() -> impl Strategy<Value = (Vec<u32>, Vec<u32>)> {
    (tokens(60), prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, 0u32..6), 0..4))
        .prop_map(|(a, edits)| {
            let mut b = a.clone();
            for (index, kind, token) in edits {
                let at = if b.is_empty() { 0 } else { index.index(b.len()) };
                match kind {
                    0 if !b.is_empty() => b[at] = token,
                    1 if !b.is_empty() => {
                        b.remove(at);
                    }
                    _ => b.insert(at, token),
                }
            }
            (a, b)
        })
}

fn check_against_dp(a: &[u32], b: &[u32]) -> Result<(), TestCaseError> {
    let diff = diff_tokens(a, b, unbounded());
    let expected_lcs = lcs_len_dp(a, b);
    prop_assert!(!diff.stats.unaligned);
    prop_assert_eq!(diff.stats.lcs_len as usize, expected_lcs);
    prop_assert_eq!(diff.stats.edit_distance as usize, a.len() + b.len() - 2 * expected_lcs);
    let (common_a, common_b) = (unmasked(a, &diff.a_mask), unmasked(b, &diff.b_mask));
    prop_assert_eq!(&common_a, &common_b);
    prop_assert_eq!(common_a.len(), expected_lcs);
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    prop_assert_eq!(diff.stats.shared_prefix_len as usize, prefix);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_pairs_match_the_dp(a in tokens(40), b in tokens(40)) {
        check_against_dp(&a, &b)?;
    }

    #[test]
    fn near_pairs_match_the_dp((a, b) in near_pair()) {
        check_against_dp(&a, &b)?;
    }

    #[test]
    fn a_pair_over_the_cap_is_unaligned_and_fully_marked(a in tokens(30), b in tokens(30)) {
        let exact = diff_tokens(&a, &b, unbounded()).stats.edit_distance;
        prop_assume!(exact > 0);
        let capped = diff_tokens(&a, &b, DiffOptions { max_edit_distance: exact - 1 });
        prop_assert!(capped.stats.unaligned);
        prop_assert!(capped.a_mask.iter().chain(&capped.b_mask).all(|&m| m == 1));
        prop_assert_eq!(capped.stats.lcs_len, 0);
        prop_assert_eq!(capped.stats.edit_distance as usize, a.len() + b.len());
        let at_cap = diff_tokens(&a, &b, DiffOptions { max_edit_distance: exact });
        prop_assert!(!at_cap.stats.unaligned);
    }
}

#[test]
fn one_substituted_token_marks_it_on_both_sides() {
    let diff = diff_tokens(&[1, 2, 3, 4], &[1, 2, 9, 4], DiffOptions::default());
    assert_eq!(diff.a_mask, [0, 0, 1, 0]);
    assert_eq!(diff.b_mask, [0, 0, 1, 0]);
    assert_eq!(diff.stats.edit_distance, 2);
    assert_eq!(diff.stats.lcs_len, 3);
    assert_eq!(diff.stats.shared_prefix_len, 2);
}

#[test]
fn empty_sides_are_pure_insertions() {
    let diff = diff_tokens::<u32>(&[], &[5, 6], DiffOptions::default());
    assert_eq!(diff.a_mask, Vec::<u8>::new());
    assert_eq!(diff.b_mask, [1, 1]);
    assert_eq!(diff.stats.edit_distance, 2);
    let both_empty = diff_tokens::<u32>(&[], &[], DiffOptions::default());
    assert_eq!(both_empty.stats.edit_distance, 0);
}
