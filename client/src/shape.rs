//! How a call's per-engine replies become its result: [`Call`] names the
//! call (shown as `[n:method]` in errors) and fixes its [`Shape`] when it is
//! made, so nobody adjusts a result afterwards.

/// What each engine's reply holds, and how the replies combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `execute`: an ExecuteReply per engine (count and last value).
    Executed,
    /// `apply`: the function's return value per engine.
    Returned,
    /// `pull`: the list of the names' values per engine; `one_name` (the
    /// name given as a string): that value itself.
    Pulled { one_name: bool },
    /// `map` and parallel functions: each engine's list of results,
    /// joined in engine order.
    Mapped,
    /// `gather`: each engine's value of the name, joined in engine order.
    Gathered,
    /// `push`, `scatter`, `clear`, `abort`, `shutdown`: None per engine.
    Nothing,
}

impl Shape {
    /// Whether a successful reply carries a value to unpickle.
    pub fn has_value(self) -> bool {
        matches!(
            self,
            Shape::Returned | Shape::Pulled { .. } | Shape::Mapped | Shape::Gathered
        )
    }

    /// Whether an engine's unpickled value is a list of pulled values of
    /// which the first is the one asked for.
    pub fn takes_first(self) -> bool {
        matches!(self, Shape::Pulled { one_name: true } | Shape::Gathered)
    }

    /// Whether the engines' parts are joined into one sequence.
    pub fn joins(self) -> bool {
        matches!(self, Shape::Mapped | Shape::Gathered)
    }
}

/// A kind of call made through a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// "execute", "apply", "map", …: shown in `[n:method]` and labels.
    pub method: &'static str,
    pub shape: Shape,
}

impl Call {
    pub const EXECUTE: Call = Call::new("execute", Shape::Executed);
    pub const APPLY: Call = Call::new("apply", Shape::Returned);
    pub const MAP: Call = Call::new("map", Shape::Mapped);
    pub const PUSH: Call = Call::new("push", Shape::Nothing);
    pub const SCATTER: Call = Call::new("scatter", Shape::Nothing);
    pub const GATHER: Call = Call::new("gather", Shape::Gathered);
    pub const CLEAR: Call = Call::new("clear", Shape::Nothing);
    pub const ABORT: Call = Call::new("abort", Shape::Nothing);
    pub const SHUTDOWN: Call = Call::new("shutdown", Shape::Nothing);
    pub const SIGNAL: Call = Call::new("signal", Shape::Nothing);

    pub const fn new(method: &'static str, shape: Shape) -> Call {
        Call { method, shape }
    }

    /// `pull` of a list of names, or (`one_name`) of one name.
    pub const fn pull(one_name: bool) -> Call {
        Call::new("pull", Shape::Pulled { one_name })
    }

    /// How a result of this call names itself: `AsyncResult(apply)`,
    /// `AsyncMapResult(map)`.
    pub fn label(self) -> String {
        if self.shape.joins() {
            format!("AsyncMapResult({})", self.method)
        } else {
            format!("AsyncResult({})", self.method)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_replies_carry_values() {
        assert!(!Shape::Executed.has_value() && !Shape::Nothing.has_value());
        for shape in [
            Shape::Returned,
            Shape::Pulled { one_name: false },
            Shape::Mapped,
            Shape::Gathered,
        ] {
            assert!(shape.has_value(), "{shape:?}");
        }
    }

    #[test]
    fn pulled_lists_and_joins() {
        assert!(Shape::Pulled { one_name: true }.takes_first());
        assert!(!Shape::Pulled { one_name: false }.takes_first());
        assert!(Shape::Gathered.takes_first() && Shape::Gathered.joins());
        assert!(Shape::Mapped.joins() && !Shape::Mapped.takes_first());
        assert!(!Shape::Returned.joins());
    }

    #[test]
    fn labels() {
        assert_eq!(Call::APPLY.label(), "AsyncResult(apply)");
        assert_eq!(Call::MAP.label(), "AsyncMapResult(map)");
        assert_eq!(Call::GATHER.label(), "AsyncMapResult(gather)");
        assert_eq!(Call::pull(true).label(), "AsyncResult(pull)");
    }
}
