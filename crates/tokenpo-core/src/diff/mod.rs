//! The token diff between two completions.
//!
//! Marks each token that lies outside a longest common subsequence (LCS) of the two
//! sequences, with Myers' O((N+M)·D) greedy algorithm ("An O(ND) Difference Algorithm
//! and Its Variations", 1986). Preference pairs usually differ by a few tokens, so the
//! common prefix and suffix are trimmed first and D stays tiny.

mod batch;

pub use batch::{diff_batch, diff_output_schema};

/// Default cap on the edit distance beyond which a pair is reported as unaligned.
pub const DEFAULT_MAX_EDIT_DISTANCE: u32 = 1024;

/// Knobs of the diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffOptions {
    /// When the edit distance exceeds this, the pair is `unaligned` and every token
    /// is marked. Bounds the work at O((N+M)·cap) and the memory at O(cap²) per thread.
    pub max_edit_distance: u32,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self { max_edit_distance: DEFAULT_MAX_EDIT_DISTANCE }
    }
}

/// Figures describing how far apart two sequences are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiffStats {
    /// Insertions plus deletions turning `a` into `b` (`len(a) + len(b)` when unaligned).
    pub edit_distance: u32,
    /// Length of the longest common subsequence (0 when unaligned).
    pub lcs_len: u32,
    /// Number of leading tokens the two sequences share.
    pub shared_prefix_len: u32,
    /// The edit distance exceeded [`DiffOptions::max_edit_distance`]; every token is marked.
    pub unaligned: bool,
}

/// The diff of one pair: a mask per side (1 = outside the LCS) and the figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDiff {
    /// One entry per token of `a`: 1 where the token is outside the LCS.
    pub a_mask: Vec<u8>,
    /// One entry per token of `b`: 1 where the token is outside the LCS.
    pub b_mask: Vec<u8>,
    /// Edit distance, LCS length, shared prefix and the unaligned flag.
    pub stats: DiffStats,
}

/// Diffs two token sequences, allocating the masks.
#[must_use]
pub fn diff_tokens<T: Eq>(a: &[T], b: &[T], options: DiffOptions) -> TokenDiff {
    let mut a_mask = vec![0; a.len()];
    let mut b_mask = vec![0; b.len()];
    let stats = diff_into(a, b, &mut a_mask, &mut b_mask, options, &mut DiffScratch::default());
    TokenDiff { a_mask, b_mask, stats }
}

/// Reusable working memory of the Myers search, one per thread.
#[derive(Debug, Default)]
pub struct DiffScratch {
    /// Furthest-reaching x per diagonal, for the step in progress.
    frontier: Vec<usize>,
    /// Snapshot of the frontier after each step d: diagonals -d..=d start at offset d².
    trace: Vec<usize>,
}

/// Diffs `a` and `b`, writing 1 into `a_mask`/`b_mask` for tokens outside the LCS and 0
/// elsewhere. The masks must have the lengths of `a` and `b`.
///
/// # Panics
/// If a mask's length differs from its sequence's: a caller bug, never data-dependent.
pub fn diff_into<T: Eq>(
    a: &[T],
    b: &[T],
    a_mask: &mut [u8],
    b_mask: &mut [u8],
    options: DiffOptions,
    scratch: &mut DiffScratch,
) -> DiffStats {
    assert_eq!(a.len(), a_mask.len(), "a_mask must have one entry per token of a");
    assert_eq!(b.len(), b_mask.len(), "b_mask must have one entry per token of b");
    let prefix = common_prefix_len(a, b);
    let suffix = common_prefix_len_rev(&a[prefix..], &b[prefix..]);
    let (a_mid, b_mid) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);

    a_mask.fill(0);
    b_mask.fill(0);
    let a_mid_mask = &mut a_mask[prefix..a.len() - suffix];
    let b_mid_mask = &mut b_mask[prefix..b.len() - suffix];
    a_mid_mask.fill(1);
    b_mid_mask.fill(1);
    let cap = options.max_edit_distance as usize;
    let middle_distance = if a_mid.is_empty() || b_mid.is_empty() {
        // Pure insertion or deletion: the edit distance is known without a search.
        Some(a_mid.len() + b_mid.len()).filter(|&distance| distance <= cap)
    } else {
        myers_mark_common(a_mid, b_mid, a_mid_mask, b_mid_mask, cap, scratch)
    };

    let shared_prefix_len = count(prefix);
    let Some(edit_distance) = middle_distance else {
        a_mask.fill(1);
        b_mask.fill(1);
        return DiffStats {
            edit_distance: count(a.len() + b.len()),
            lcs_len: 0,
            shared_prefix_len,
            unaligned: true,
        };
    };
    DiffStats {
        edit_distance: count(edit_distance),
        lcs_len: count((a.len() + b.len() - edit_distance) / 2),
        shared_prefix_len,
        unaligned: false,
    }
}

/// Runs the greedy forward search for the shortest edit script of two non-empty
/// sequences and clears the mask of every token on the found common subsequence.
/// Returns the edit distance, or `None` when it exceeds `cap` (masks then undefined).
#[expect(clippy::many_single_char_names, reason = "the paper's notation: x, y, k, d, n, m")]
fn myers_mark_common<T: Eq>(
    a: &[T],
    b: &[T],
    a_mask: &mut [u8],
    b_mask: &mut [u8],
    cap: usize,
    scratch: &mut DiffScratch,
) -> Option<usize> {
    let (n, m) = (a.len(), b.len());
    let max_d = cap.min(n + m);
    // Diagonal k = x - y is stored at index k + max_d + 1, so k ± 1 stays in bounds.
    let centre = max_d + 1;
    scratch.frontier.clear();
    scratch.frontier.resize(2 * max_d + 3, 0);
    scratch.trace.clear();

    for d in 0..=max_d {
        let frontier = &mut scratch.frontier;
        for k in (centre - d..=centre + d).step_by(2) {
            let take_down =
                k == centre - d || (k != centre + d && frontier[k - 1] < frontier[k + 1]);
            let mut x = if take_down { frontier[k + 1] } else { frontier[k - 1] + 1 };
            // y = x - (k - centre); x + centre >= k holds on every reachable diagonal.
            let mut y = x + centre - k;
            while x < n && y < m && a[x] == b[y] {
                x += 1;
                y += 1;
            }
            frontier[k] = x;
            if x >= n && y >= m {
                backtrack(a_mask, b_mask, &scratch.trace, d, n, m);
                return Some(d);
            }
        }
        scratch.trace.extend_from_slice(&frontier[centre - d..=centre + d]);
    }
    None
}

/// Walks the recorded frontiers back from (n, m) at step `d` to (0, 0), clearing the
/// mask along every snake (run of equal tokens) of the edit path.
#[expect(clippy::many_single_char_names, reason = "the paper's notation: x, y, k, d, n, m")]
fn backtrack(a_mask: &mut [u8], b_mask: &mut [u8], trace: &[usize], d: usize, n: usize, m: usize) {
    let (mut x, mut y) = (n, m);
    for step in (1..=d).rev() {
        // Frontier of step - 1 covers diagonals -(step-1)..=(step-1), stored from (step-1)².
        let previous = &trace[(step - 1) * (step - 1)..step * step];
        let at = |diagonal: isize| previous[(diagonal + step as isize - 1) as usize];
        let k = x as isize - y as isize;
        let step_signed = step as isize;
        let take_down = k == -step_signed || (k != step_signed && at(k - 1) < at(k + 1));
        let previous_k = if take_down { k + 1 } else { k - 1 };
        let previous_x = at(previous_k);
        let previous_y = (previous_x as isize - previous_k) as usize;
        let (snake_x, snake_y) =
            if take_down { (previous_x, previous_y + 1) } else { (previous_x + 1, previous_y) };
        a_mask[snake_x..x].fill(0);
        b_mask[snake_y..y].fill(0);
        (x, y) = (previous_x, previous_y);
    }
    a_mask[..x].fill(0);
    b_mask[..y].fill(0);
}

fn common_prefix_len<T: Eq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn common_prefix_len_rev<T: Eq>(a: &[T], b: &[T]) -> usize {
    a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count()
}

/// Token counts fit u32 (Arrow list offsets are i32 or i64 but sequences are short);
/// saturate rather than wrap if they ever do not.
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
