//! Kendall's rank correlation τ-b (ties in either ranking corrected for), the measure
//! of how well a search ranks configurations against their stand-alone accuracies.

/// τ-b of two equally long samples: (concordant − discordant) /
/// √((n₀ − n₁)(n₀ − n₂)), with n₀ = n(n−1)/2 pairs and n₁, n₂ the pairs tied in `x`
/// and in `y`. `None` when it is undefined (fewer than 2 values, lengths that differ,
/// or either sample constant). O(n²): searches rank tens of configurations.
pub fn tau_b(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    if n < 2 || y.len() != n {
        return None;
    }
    let (mut concordant, mut discordant) = (0i64, 0i64);
    let (mut tied_x, mut tied_y) = (0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let dx = x[i] - x[j];
            let dy = y[i] - y[j];
            if dx == 0.0 {
                tied_x += 1;
            }
            if dy == 0.0 {
                tied_y += 1;
            }
            if dx != 0.0 && dy != 0.0 {
                if (dx > 0.0) == (dy > 0.0) {
                    concordant += 1;
                } else {
                    discordant += 1;
                }
            }
        }
    }
    let pairs = (n * (n - 1) / 2) as i64;
    let denom = (((pairs - tied_x) * (pairs - tied_y)) as f64).sqrt();
    if denom == 0.0 {
        return None;
    }
    Some((concordant - discordant) as f64 / denom)
}

#[cfg(test)]
mod tests {
    use super::tau_b;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn hand_cases() {
        close(
            tau_b(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]).unwrap(),
            1.0,
        );
        close(
            tau_b(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]).unwrap(),
            -1.0,
        );
        // Pairs (0,1) and (0,2) concordant, (1,2) discordant: (2 − 1)/3.
        close(
            tau_b(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]).unwrap(),
            1.0 / 3.0,
        );
        // One pair tied in x: 2 concordant, n₀ = 3, n₁ = 1: 2/√(2·3) (scipy: 0.8164965).
        close(
            tau_b(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]).unwrap(),
            2.0 / 6f64.sqrt(),
        );
        // The same pair tied on both sides (n₁ = n₂ = 1), the other two concordant:
        // (2 − 0)/√(2·2) = 1.
        close(tau_b(&[1.0, 1.0, 2.0], &[5.0, 5.0, 7.0]).unwrap(), 1.0);
        assert_eq!(tau_b(&[1.0], &[2.0]), None);
        assert_eq!(tau_b(&[1.0, 1.0], &[2.0, 3.0]), None);
        assert_eq!(tau_b(&[1.0, 2.0], &[2.0]), None);
    }
}
