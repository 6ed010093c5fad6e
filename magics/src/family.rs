//! The `%px` family by name. Each member can carry a suffix naming the
//! view it runs on: `view.activate("2")` makes `%px2`, `%%px2`,
//! `%autopx2`, `%pxresult2` and `%pxconfig2`.

/// A member of the `%px` family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Magic {
    /// `%px CODE` and `%%px [options]`.
    Px,
    /// `%pxresult` (and its alias `%result`).
    PxResult,
    /// `%pxconfig [options]`.
    PxConfig,
    /// `%autopx`.
    AutoPx,
}

/// Longest names first, so `pxresult` is not read as `px` + "result".
const NAMES: [(&str, Magic); 5] = [
    ("pxresult", Magic::PxResult),
    ("pxconfig", Magic::PxConfig),
    ("autopx", Magic::AutoPx),
    ("result", Magic::PxResult),
    ("px", Magic::Px),
];

/// Splits a magic's name into its family member and view suffix:
/// `px` → (Px, ""), `px2` → (Px, "2"). None for other magics.
pub fn lookup(name: &str) -> Option<(Magic, &str)> {
    NAMES
        .iter()
        .find_map(|(base, magic)| name.strip_prefix(base).map(|suffix| (*magic, suffix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_suffixes() {
        assert_eq!(lookup("px"), Some((Magic::Px, "")));
        assert_eq!(lookup("px2"), Some((Magic::Px, "2")));
        assert_eq!(lookup("pxresult"), Some((Magic::PxResult, "")));
        assert_eq!(lookup("result"), Some((Magic::PxResult, "")));
        assert_eq!(lookup("pxconfig_b"), Some((Magic::PxConfig, "_b")));
        assert_eq!(lookup("autopx"), Some((Magic::AutoPx, "")));
        assert_eq!(lookup("timeit"), None);
    }
}
