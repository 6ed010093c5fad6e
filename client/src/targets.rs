//! Which engines a request goes to. Users pick engines in several
//! spellings (`rc[2]`, `rc[1:3]`, `targets=[0, 2]`, `'all'`,
//! `%px --targets ::2`); all are read here, with one set of rules, as
//! ipyparallel has them: an int is an engine id (negative: counted from the
//! end of the live ids, so a dead engine's id never picks another engine),
//! a slice picks among the live ids as Python slices a list. Everything but
//! 'all' is resolved when given.

use std::fmt;

/// The engines of a view or a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// Every live engine, as engines come and go.
    All,
    /// One engine: results are bare values, not lists.
    One(u32),
    /// These engines, in this order.
    Many(Vec<u32>),
}

/// Why targets pick no engine, or cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    NoEngines,
    NoSuchEngine(i64),
    /// An empty list, or a slice that picks nothing.
    Empty,
    /// A `--targets` spec that is not one.
    BadSpec(String),
    ZeroStep,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::NoEngines => f.write_str("No engines are registered."),
            TargetError::NoSuchEngine(i) => write!(f, "No such engine: {i}"),
            TargetError::Empty => f.write_str("the target list is empty"),
            TargetError::BadSpec(spec) => write!(
                f,
                "bad target spec {spec:?}: use all, an engine (0), a list (1,3) or a slice (1:3, ::2)"
            ),
            TargetError::ZeroStep => f.write_str("slice step cannot be zero"),
        }
    }
}

impl std::error::Error for TargetError {}

impl Targets {
    /// The engine ids, checked against `live` (sorted ids).
    pub fn resolve(&self, live: &[u32]) -> Result<Vec<u32>, TargetError> {
        match self {
            Targets::All if live.is_empty() => Err(TargetError::NoEngines),
            Targets::All => Ok(live.to_vec()),
            Targets::One(id) => check(*id, live).map(|id| vec![id]),
            Targets::Many(ids) if ids.is_empty() => Err(TargetError::Empty),
            Targets::Many(ids) => ids.iter().map(|&id| check(id, live)).collect(),
        }
    }

    pub fn is_single(&self) -> bool {
        matches!(self, Targets::One(_))
    }

    /// An int target: an engine id, or counted from the end of `live`
    /// (sorted) when negative (`-1`: the newest engine).
    pub fn engine(live: &[u32], i: i64) -> Result<u32, TargetError> {
        let found = if i < 0 {
            usize::try_from(i + live.len() as i64)
                .ok()
                .and_then(|at| live.get(at).copied())
        } else {
            u32::try_from(i).ok().filter(|id| live.contains(id))
        };
        found.ok_or(TargetError::NoSuchEngine(i))
    }

    /// The live ids a Python slice `[start:stop:step]` picks.
    pub fn slice(
        live: &[u32],
        start: Option<i64>,
        stop: Option<i64>,
        step: Option<i64>,
    ) -> Result<Vec<u32>, TargetError> {
        let n = live.len() as i64;
        let step = step.unwrap_or(1);
        if step == 0 {
            return Err(TargetError::ZeroStep);
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
        let mut out = Vec::new();
        if step > 0 {
            let mut i = start.map_or(0, norm).clamp(0, n);
            let end = stop.map_or(n, norm).clamp(0, n);
            while i < end {
                out.push(live[i as usize]);
                i = i.saturating_add(step);
            }
        } else {
            let mut i = start.map_or(n - 1, norm).clamp(-1, n - 1);
            let end = stop.map_or(-1, norm).clamp(-1, n - 1);
            while i > end {
                out.push(live[i as usize]);
                i = i.saturating_add(step);
            }
        }
        Ok(out)
    }

    /// A `--targets` spec of the `%px` family: `all`, an engine (`0`,
    /// `-1`), a list (`1,3`, `[1, 2]`) or a slice (`1:3`, `::2`), resolved
    /// against `live`. A spec that picks no engine is an error.
    pub fn parse(spec: &str, live: &[u32]) -> Result<Targets, TargetError> {
        let bad = || TargetError::BadSpec(spec.to_string());
        let int = |text: &str| text.trim().parse::<i64>().map_err(|_| bad());
        let optional = |text: &str| {
            let text = text.trim();
            if text.is_empty() {
                Ok(None)
            } else {
                int(text).map(Some)
            }
        };
        let text = spec.trim().trim_matches(|c| c == '[' || c == ']');
        if text.eq_ignore_ascii_case("all") {
            return Ok(Targets::All);
        }
        if text.is_empty() {
            return Err(bad());
        }
        let targets = if text.contains(':') {
            let parts: Vec<&str> = text.split(':').collect();
            if parts.len() > 3 || text.contains(',') {
                return Err(bad());
            }
            let step = parts.get(2).map_or(Ok(None), |s| optional(s))?;
            let (start, stop) = (optional(parts[0])?, optional(parts[1])?);
            Targets::Many(Targets::slice(live, start, stop, step)?)
        } else {
            let ints = text.split(',').map(int).collect::<Result<Vec<_>, _>>()?;
            let ids = ints
                .iter()
                .map(|&i| Targets::engine(live, i))
                .collect::<Result<Vec<_>, _>>()?;
            match ids[..] {
                [one] => Targets::One(one),
                _ => Targets::Many(ids),
            }
        };
        if targets == Targets::Many(vec![]) {
            return Err(TargetError::Empty);
        }
        Ok(targets)
    }
}

fn check(id: u32, live: &[u32]) -> Result<u32, TargetError> {
    if live.contains(&id) {
        Ok(id)
    } else {
        Err(TargetError::NoSuchEngine(id as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(n: u32) -> Vec<u32> {
        (0..n).collect()
    }

    fn pick(spec: &str, live: &[u32]) -> Vec<u32> {
        Targets::parse(spec, live).unwrap().resolve(live).unwrap()
    }

    #[test]
    fn resolution() {
        let live = [0, 1, 2, 3];
        assert_eq!(Targets::All.resolve(&live), Ok(vec![0, 1, 2, 3]));
        assert_eq!(Targets::One(2).resolve(&live), Ok(vec![2]));
        assert_eq!(
            Targets::One(9).resolve(&live),
            Err(TargetError::NoSuchEngine(9))
        );
        assert_eq!(
            Targets::Many(vec![]).resolve(&live),
            Err(TargetError::Empty)
        );
        assert_eq!(Targets::All.resolve(&[]), Err(TargetError::NoEngines));
        assert_eq!(Targets::engine(&live, -1), Ok(3));
        assert_eq!(Targets::engine(&live, 4), Err(TargetError::NoSuchEngine(4)));
        assert_eq!(
            Targets::engine(&live, -5),
            Err(TargetError::NoSuchEngine(-5))
        );
        // After engine 1 died, 1 is an error, not the second live engine.
        let after = [0, 2, 3];
        assert_eq!(
            Targets::engine(&after, 1),
            Err(TargetError::NoSuchEngine(1))
        );
        assert_eq!(Targets::engine(&after, 2), Ok(2));
        assert_eq!(Targets::engine(&after, -2), Ok(2));
    }

    #[test]
    fn the_documented_forms() {
        let live = ids(4);
        assert_eq!(pick("all", &live), vec![0, 1, 2, 3]);
        assert_eq!(pick("0", &live), vec![0]);
        assert_eq!(Targets::parse("0", &live), Ok(Targets::One(0)));
        assert_eq!(pick("1,3", &live), vec![1, 3]);
        assert_eq!(pick("::2", &live), vec![0, 2]);
        assert_eq!(pick("1:3", &live), vec![1, 2]);
        assert_eq!(pick("-1", &live), vec![3]);
        assert_eq!(pick("[1, 2]", &live), vec![1, 2]);
        assert_eq!(pick("::-1", &live), vec![3, 2, 1, 0]);
        assert_eq!(Targets::parse("All", &[]), Ok(Targets::All));
    }

    #[test]
    fn bad_specs_are_one_line_errors() {
        for spec in [
            "", "x", "1:2:3:4", "::0", "1,,2", "1:2,3", "a:b", "9", "5:9",
        ] {
            let err = Targets::parse(spec, &ids(4)).unwrap_err().to_string();
            assert!(!err.contains('\n') && !err.is_empty(), "{spec:?}: {err}");
        }
        assert_eq!(
            Targets::parse("9", &ids(4)),
            Err(TargetError::NoSuchEngine(9))
        );
        assert_eq!(Targets::parse("5:9", &ids(4)), Err(TargetError::Empty));
        assert_eq!(Targets::parse("::0", &ids(4)), Err(TargetError::ZeroStep));
    }

    fn slice_parts(spec: &str) -> (Option<i64>, Option<i64>, Option<i64>) {
        let part = |i: usize| {
            spec.split(':')
                .nth(i)
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().unwrap())
        };
        (part(0), part(1), part(2))
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
            let (start, stop, step) = slice_parts(spec);
            let got = Targets::slice(&ids(*n), start, stop, step).unwrap();
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
            let picked = match Targets::parse(&text, &live) {
                Ok(targets) => targets.resolve(&live).unwrap(),
                Err(e) => { prop_assert_eq!(e, TargetError::Empty); vec![] }
            };
            prop_assert!(picked.len() <= live.len());
            prop_assert!(picked.iter().all(|id| live.contains(id)));
        }

        #[test]
        fn lists_round_trip(picks in proptest::collection::vec(0i64..6, 1..6)) {
            let text = picks.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",");
            let live = ids(6);
            prop_assert_eq!(pick(&text, &live), picks.iter().map(|&p| p as u32).collect::<Vec<_>>());
        }

        #[test]
        fn ints_are_engine_ids_never_positions(dead in 0u32..6, i in -8i64..8) {
            let live: Vec<u32> = (0..6).filter(|id| *id != dead).collect();
            let picked = Targets::engine(&live, i).ok();
            if i >= 0 {
                prop_assert_eq!(picked, (i as u32 != dead && i < 6).then_some(i as u32));
            } else {
                prop_assert_eq!(picked, live.get((i + 5) as usize).copied().filter(|_| i >= -5));
            }
        }

        #[test]
        fn parsing_never_panics(text in ".{0,12}") {
            let _ = Targets::parse(&text, &ids(4));
        }
    }
}
