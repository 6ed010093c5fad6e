//! Resolving `targets` (an id, a list, a slice, 'all' or None) against the
//! live engine ids.

/// What a view's targets mean, kept as given so 'all' follows engines
/// coming and going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    All,
    /// One engine: results are bare values, not lists.
    One(u32),
    Many(Vec<u32>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("No engines are registered.")]
    NoEngines,
    #[error("No such engine: {0}")]
    NoSuchEngine(i64),
    #[error("the target list is empty")]
    Empty,
}

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
}

fn check(id: u32, live: &[u32]) -> Result<u32, TargetError> {
    if live.contains(&id) {
        Ok(id)
    } else {
        Err(TargetError::NoSuchEngine(id as i64))
    }
}

/// An int target: an engine id, or counted from the end when negative
/// (the `%px --targets` rule, shared).
pub fn index(live: &[u32], i: i64) -> Result<u32, TargetError> {
    rparallel_magics::targets::engine(live, i).ok_or(TargetError::NoSuchEngine(i))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(index(&live, -1), Ok(3));
        assert_eq!(index(&live, 4), Err(TargetError::NoSuchEngine(4)));
        assert_eq!(index(&live, -5), Err(TargetError::NoSuchEngine(-5)));
        // After engine 1 died, 1 is an error, not the second live engine.
        let after = [0, 2, 3];
        assert_eq!(index(&after, 1), Err(TargetError::NoSuchEngine(1)));
        assert_eq!(index(&after, 2), Ok(2));
        assert_eq!(index(&after, -2), Ok(2));
    }
}
