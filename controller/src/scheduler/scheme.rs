//! How the scheduler picks an engine among those that may take a task
//! now: ipyparallel's schemes. Candidates come in least-recently-used
//! order (the engine that got a task longest ago first).

pub use rparallel_cluster::scheduling::{Scheme, SCHEMES};

/// The index in `loads` (candidates' unfinished tasks, least recently
/// used first; never empty) of the engine to use.
pub fn choose(scheme: Scheme, loads: &[usize], rng: &mut fastrand::Rng) -> usize {
    let n = loads.len();
    match scheme {
        Scheme::LeastLoad => (0..n).min_by_key(|&i| loads[i]).unwrap_or(0),
        Scheme::Lru | Scheme::Pure => 0,
        Scheme::PlainRandom => rng.usize(..n),
        Scheme::TwoBin => rng.usize(..n).min(rng.usize(..n)),
        Scheme::Weighted => {
            let weights: Vec<f64> = loads.iter().map(|&l| 1.0 / (1e-6 + l as f64)).collect();
            let total: f64 = weights.iter().sum();
            let mut pick = || {
                let mut x = rng.f64() * total;
                for (i, w) in weights.iter().enumerate() {
                    if x < *w {
                        return i;
                    }
                    x -= w;
                }
                n - 1
            };
            let (a, b) = (pick(), pick());
            if loads[b] < loads[a] {
                b
            } else {
                a
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_picks_a_candidate() {
        let mut rng = fastrand::Rng::with_seed(1);
        let loads = [2, 0, 1, 0];
        assert_eq!(choose(Scheme::LeastLoad, &loads, &mut rng), 1);
        assert_eq!(choose(Scheme::Lru, &loads, &mut rng), 0);
        for scheme in [Scheme::PlainRandom, Scheme::TwoBin, Scheme::Weighted] {
            for _ in 0..100 {
                assert!(choose(scheme, &loads, &mut rng) < loads.len());
            }
        }
        // Weighted strongly prefers idle engines.
        let idle = (0..200)
            .filter(|_| loads[choose(Scheme::Weighted, &loads, &mut rng)] == 0)
            .count();
        assert!(idle > 190, "{idle}");
    }
}
