//! `--targets SPEC` of the `%px` family: `all`, `0`, `1,3`, `1:3`, `::2`,
//! `-1`: engine ids, negative ones counted from the end, and Python
//! slicing over the live engine ids.

use std::fmt;

/// A parsed target spec, resolved against the live ids when used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    All,
    /// Indices into the sorted live ids; negative counts from the end.
    Indices(Vec<i64>),
    Slice {
        start: Option<i64>,
        stop: Option<i64>,
        step: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError(pub String);

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TargetError {}

fn bad(spec: &str) -> TargetError {
    TargetError(format!(
        "bad target spec {spec:?}: use all, an engine (0), a list (1,3) or a slice (1:3, ::2)"
    ))
}

fn int(text: &str, spec: &str) -> Result<i64, TargetError> {
    text.trim().parse().map_err(|_| bad(spec))
}

fn optional(text: &str, spec: &str) -> Result<Option<i64>, TargetError> {
    let text = text.trim();
    if text.is_empty() {
        Ok(None)
    } else {
        int(text, spec).map(Some)
    }
}

impl std::str::FromStr for TargetSpec {
    type Err = TargetError;

    fn from_str(spec: &str) -> Result<Self, TargetError> {
        let text = spec.trim().trim_matches(|c| c == '[' || c == ']');
        if text.eq_ignore_ascii_case("all") {
            return Ok(TargetSpec::All);
        }
        if text.is_empty() {
            return Err(bad(spec));
        }
        if text.contains(':') {
            let parts: Vec<&str> = text.split(':').collect();
            if parts.len() > 3 || text.contains(',') {
                return Err(bad(spec));
            }
            let step = match parts.get(2) {
                Some(s) => optional(s, spec)?,
                None => None,
            };
            if step == Some(0) {
                return Err(TargetError(format!(
                    "bad target spec {spec:?}: slice step cannot be zero"
                )));
            }
            return Ok(TargetSpec::Slice {
                start: optional(parts[0], spec)?,
                stop: optional(parts[1], spec)?,
                step,
            });
        }
        let indices = text
            .split(',')
            .map(|part| int(part, spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TargetSpec::Indices(indices))
    }
}

/// An int target, as ipyparallel reads it: an engine id, or counted from
/// the end of the live ids (sorted) when negative (`-1`: the newest). A
/// dead engine's id picks nothing, never another engine.
pub fn engine(live: &[u32], i: i64) -> Option<u32> {
    if i < 0 {
        let at = usize::try_from(i + live.len() as i64).ok()?;
        return live.get(at).copied();
    }
    u32::try_from(i).ok().filter(|id| live.contains(id))
}

impl TargetSpec {
    /// The engine ids this spec picks from `live` (sorted): ints are
    /// engine ids (see [`engine`]), slices index the live ids.
    pub fn resolve(&self, live: &[u32]) -> Result<Vec<u32>, TargetError> {
        let n = live.len() as i64;
        match self {
            TargetSpec::All => Ok(live.to_vec()),
            TargetSpec::Indices(indices) => indices
                .iter()
                .map(|&i| {
                    engine(live, i)
                        .ok_or_else(|| TargetError(format!("no engine {i} (engines: {live:?})")))
                })
                .collect(),
            TargetSpec::Slice { start, stop, step } => {
                let step = step.unwrap_or(1);
                let clamp = |v: i64, low: i64, high: i64| v.clamp(low, high);
                let norm = |v: i64| if v < 0 { v + n } else { v };
                let mut out = Vec::new();
                if step > 0 {
                    let mut i = clamp(start.map_or(0, norm), 0, n);
                    let end = clamp(stop.map_or(n, norm), 0, n);
                    while i < end {
                        out.push(live[i as usize]);
                        i += step;
                    }
                } else {
                    let mut i = clamp(start.map_or(n - 1, norm), -1, n - 1);
                    let end = clamp(stop.map_or(-1, norm), -1, n - 1);
                    while i > end {
                        out.push(live[i as usize]);
                        i += step;
                    }
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: u32) -> Vec<u32> {
        (0..n).collect()
    }

    #[test]
    fn the_documented_forms() {
        let live = ids(4);
        let pick = |s: &str| s.parse::<TargetSpec>().unwrap().resolve(&live).unwrap();
        assert_eq!(pick("all"), vec![0, 1, 2, 3]);
        assert_eq!(pick("0"), vec![0]);
        assert_eq!(pick("1,3"), vec![1, 3]);
        assert_eq!(pick("::2"), vec![0, 2]);
        assert_eq!(pick("1:3"), vec![1, 2]);
        assert_eq!(pick("-1"), vec![3]);
        assert_eq!(pick("[1, 2]"), vec![1, 2]);
        assert_eq!(pick("::-1"), vec![3, 2, 1, 0]);
    }

    #[test]
    fn bad_specs_are_one_line_errors() {
        for spec in ["", "x", "1:2:3:4", "::0", "1,,2", "1:2,3", "a:b"] {
            let err = spec.parse::<TargetSpec>().unwrap_err().to_string();
            assert!(
                !err.contains('\n') && err.contains("target spec"),
                "{spec:?}: {err}"
            );
        }
        assert!("9".parse::<TargetSpec>().unwrap().resolve(&ids(4)).is_err());
    }

    /// Cases computed by Python itself: `list(range(n))[slice(...)]`.
    const PYTHON_SLICES: &[(u32, &str, &[u32])] = &[
        (5, "-7:1:3", &[0]),
        (0, "-9:6:-3", &[] as &[u32]),
        (5, "7:-10:2", &[] as &[u32]),
        (3, "-10:-9:1", &[] as &[u32]),
        (6, "-9:-4:-3", &[] as &[u32]),
        (8, "2:-10:2", &[] as &[u32]),
        (1, "-4:9:3", &[0]),
        (0, "7:7:1", &[] as &[u32]),
        (0, "-4:-10:2", &[] as &[u32]),
        (2, "-2:2:-2", &[] as &[u32]),
        (8, "-8:7:-1", &[] as &[u32]),
        (8, "-6:-8:2", &[] as &[u32]),
        (3, "0:-8:2", &[] as &[u32]),
        (1, "7:-10:2", &[] as &[u32]),
        (3, "4:6:1", &[] as &[u32]),
        (5, "3:7:1", &[3, 4]),
        (5, "-2:-4:-2", &[3]),
        (3, "-9:7:-1", &[] as &[u32]),
        (8, "4:-1:3", &[4]),
        (7, "-2:8:-3", &[] as &[u32]),
        (1, "5:2:-2", &[] as &[u32]),
        (5, "-7:4:1", &[0, 1, 2, 3]),
        (0, "-9:6:2", &[] as &[u32]),
        (5, "-1:0:2", &[] as &[u32]),
        (7, "7:3:-3", &[6]),
        (1, "-3:4:3", &[0]),
        (1, "-10:-2:3", &[] as &[u32]),
        (7, "-2:1:3", &[] as &[u32]),
        (5, ":3:-1", &[4]),
        (2, "8:-8:1", &[] as &[u32]),
        (0, "-5:-2:-2", &[] as &[u32]),
        (3, "1:1:1", &[] as &[u32]),
        (1, "-6:3:1", &[0]),
        (8, "-3:-7:1", &[] as &[u32]),
        (8, "-3:2:-1", &[5, 4, 3]),
        (6, "-4:-7:-3", &[2]),
        (2, "-7:-4:3", &[] as &[u32]),
        (3, ":4:2", &[0, 2]),
        (2, "-3:-2:-3", &[] as &[u32]),
        (2, "2:6:-1", &[] as &[u32]),
        (5, "-7:5:2", &[0, 2, 4]),
        (0, "3:6:1", &[] as &[u32]),
        (6, "1:1:-3", &[] as &[u32]),
        (7, "9:1:-3", &[6, 3]),
        (3, "-9:-5:1", &[] as &[u32]),
        (2, "-8:-1:2", &[0]),
        (0, "-8::2", &[] as &[u32]),
        (2, "6:-8:-1", &[1, 0]),
        (0, "-9:-5:2", &[] as &[u32]),
        (6, "-7:9:-1", &[] as &[u32]),
        (5, "8:0:1", &[] as &[u32]),
        (1, "-8:4:1", &[0]),
        (7, "4:-2:-3", &[] as &[u32]),
        (2, "-8:-1:3", &[0]),
        (4, "4:-6:2", &[] as &[u32]),
        (0, "-5:5:-1", &[] as &[u32]),
        (2, "6::2", &[] as &[u32]),
        (4, "9:-9:3", &[] as &[u32]),
        (4, "5:0:-2", &[3, 1]),
        (5, "-4:6:2", &[1, 3]),
    ];

    #[test]
    fn slices_match_python() {
        for (n, spec, expected) in PYTHON_SLICES {
            let got = spec
                .parse::<TargetSpec>()
                .unwrap()
                .resolve(&ids(*n))
                .unwrap();
            assert_eq!(&got, expected, "n={n} spec={spec}");
        }
    }

    proptest! {
        #[test]
        fn slices_pick_live_ids_without_panicking(n in 0u32..12, start in proptest::option::of(-15i64..15),
                               stop in proptest::option::of(-15i64..15),
                               step in prop_oneof![-4i64..=-1, 1i64..=4]) {
            let live = ids(n);
            let text = format!(
                "{}:{}:{}",
                start.map(|v| v.to_string()).unwrap_or_default(),
                stop.map(|v| v.to_string()).unwrap_or_default(),
                step
            );
            let picked = text.parse::<TargetSpec>().unwrap().resolve(&live).unwrap();
            prop_assert!(picked.len() <= live.len());
            prop_assert!(picked.iter().all(|id| live.contains(id)));
        }

        #[test]
        fn lists_round_trip(picks in proptest::collection::vec(0i64..6, 1..6)) {
            let text = picks.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
            let spec: TargetSpec = text.parse().unwrap();
            let live = ids(6);
            prop_assert_eq!(spec.resolve(&live).unwrap(), picks.iter().map(|&p| p as u32).collect::<Vec<_>>());
        }

        #[test]
        fn ints_are_engine_ids_never_positions(dead in 0u32..6, i in -8i64..8) {
            let live: Vec<u32> = (0..6).filter(|id| *id != dead).collect();
            let picked = engine(&live, i);
            if i >= 0 {
                prop_assert_eq!(picked, (i as u32 != dead && i < 6).then_some(i as u32));
            } else {
                prop_assert_eq!(picked, live.get((i + 5) as usize).copied().filter(|_| i >= -5));
            }
        }

        #[test]
        fn parsing_never_panics(text in ".{0,12}") {
            let _ = text.parse::<TargetSpec>();
        }
    }
}
