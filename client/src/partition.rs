//! Block partitioning for map and scatter: `n` items over `k` engines in
//! contiguous runs whose lengths differ by at most one, earlier engines
//! taking the extra items (as ipyparallel's `Map` does).

/// The `[start, end)` range of part `i` of `k` over `n` items.
pub fn block(n: usize, k: usize, i: usize) -> (usize, usize) {
    let base = n / k;
    let extra = n % k;
    let start = i * base + i.min(extra);
    let len = base + usize::from(i < extra);
    (start, start + len)
}

/// All `k` ranges.
pub fn blocks(n: usize, k: usize) -> Vec<(usize, usize)> {
    (0..k).map(|i| block(n, k, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_everything_in_order() {
        for n in 0..40 {
            for k in 1..9 {
                let parts = blocks(n, k);
                assert_eq!(parts[0].0, 0);
                assert_eq!(parts[k - 1].1, n);
                for w in parts.windows(2) {
                    assert_eq!(w[0].1, w[1].0);
                }
                let lens: Vec<usize> = parts.iter().map(|(a, b)| b - a).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
            }
        }
        assert_eq!(blocks(10, 4), vec![(0, 3), (3, 6), (6, 8), (8, 10)]);
    }
}
