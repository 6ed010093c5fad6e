//! Input transformation: the cell syntax beyond Python. A cell is Python
//! (whose `%name args` lines, at any indentation, become calls) or a cell
//! magic (`%%name args` on its first line). Both become Python calling two
//! builtins: this module owns their names, the shell installs defaults
//! under them and the kernel's `%px` family replaces those
//! ([`crate::MagicHandlers`]).
//!
//! The execute path applies [`to_python`] to every cell, in the kernel and
//! on the engines alike. Pure string work: no Python needed.

/// The Python name line magics are rewritten to call:
/// `%name args` → `__rparallel_magic__('name', 'args')`.
pub const MAGIC_CALL: &str = "__rparallel_magic__";

/// A parsed cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// Python source, with line magics already rewritten into calls.
    Python(String),
    /// `%%name args` on the first line, then the body.
    CellMagic {
        name: String,
        args: String,
        body: String,
    },
}

/// The Python name a cell magic is rewritten to call:
/// `%%name args\nbody` → `__rparallel_cell_magic__('name', 'args', 'body')`.
pub const CELL_MAGIC_CALL: &str = "__rparallel_cell_magic__";

impl Cell {
    /// The Python source that runs this cell.
    pub fn into_python(self) -> String {
        match self {
            Cell::Python(code) => code,
            Cell::CellMagic { name, args, body } => format!(
                "{CELL_MAGIC_CALL}({}, {}, {})",
                py_str(&name),
                py_str(&args),
                py_str(&body)
            ),
        }
    }
}

/// The Python source that runs `code`, a cell as a frontend sends it.
pub fn to_python(code: &str) -> String {
    parse_cell(code).into_python()
}

/// Parses a cell as the kernel receives it.
pub fn parse_cell(code: &str) -> Cell {
    let trimmed = code.trim_start_matches(['\n', '\r']);
    if let Some(rest) = trimmed.strip_prefix("%%") {
        let (first, body) = rest.split_once('\n').unwrap_or((rest, ""));
        let (name, args) = split_name(first);
        if !name.is_empty() {
            return Cell::CellMagic {
                name: name.to_string(),
                args: args.to_string(),
                body: body.to_string(),
            };
        }
    }
    Cell::Python(rewrite_line_magics(code))
}

/// Whether a cell magic typed line by line is finished: its body, unlike
/// Python, has no syntax to tell, so it ends at a blank line.
pub fn cell_magic_complete(code: &str) -> bool {
    code.rsplit_once('\n')
        .is_some_and(|(_, last)| last.trim().is_empty())
}

/// Rewrites every line whose first non-blank character is `%` into a call,
/// keeping its indentation (so `%px` inside a `for` loop runs each time).
/// Lines inside multi-line strings are left alone.
pub fn rewrite_line_magics(code: &str) -> String {
    if !code.contains('%') {
        return code.to_string();
    }
    let mut out = String::with_capacity(code.len() + 32);
    let mut in_string: Option<&str> = None;
    for (i, line) in code.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let stripped = line.trim_start_matches([' ', '\t']);
        let indent = &line[..line.len() - stripped.len()];
        match stripped.strip_prefix('%') {
            Some(magic) if in_string.is_none() && !magic.starts_with('%') => {
                let (name, args) = split_name(magic);
                out.push_str(indent);
                out.push_str(&format!("{MAGIC_CALL}({}, {})", py_str(name), py_str(args)));
            }
            _ => out.push_str(line),
        }
        in_string = track_triple_quotes(line, in_string);
    }
    out
}

fn split_name(text: &str) -> (&str, &str) {
    let text = text.trim_end_matches('\r');
    match text.find(char::is_whitespace) {
        Some(at) => (&text[..at], text[at..].trim()),
        None => (text, ""),
    }
}

/// A Python string literal for `text`.
fn py_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Whether a triple-quoted string is open after `line`.
fn track_triple_quotes<'q>(line: &str, mut open: Option<&'q str>) -> Option<&'q str> {
    let mut rest = line;
    loop {
        match open {
            Some(quote) => match rest.find(quote) {
                Some(at) => {
                    rest = &rest[at + 3..];
                    open = None;
                }
                None => return open,
            },
            None => {
                let next = ["\"\"\"", "'''"]
                    .into_iter()
                    .filter_map(|q| rest.find(q).map(|at| (at, q)))
                    .min();
                match next {
                    Some((at, quote)) if !rest[..at].contains('#') => {
                        rest = &rest[at + 3..];
                        open = Some(quote);
                    }
                    _ => return None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_python_is_untouched() {
        let code = "x = 5 % 3\nprint('%d' % x)";
        assert_eq!(parse_cell(code), Cell::Python(code.into()));
    }

    #[test]
    fn line_magics_become_calls_at_any_indentation() {
        let code = "for i in range(2):\n    %px print(i)\n%autopx";
        assert_eq!(
            parse_cell(code),
            Cell::Python(
                "for i in range(2):\n    __rparallel_magic__('px', 'print(i)')\n__rparallel_magic__('autopx', '')"
                    .into()
            )
        );
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(
            rewrite_line_magics(r"%px s = 'a\n'"),
            r"__rparallel_magic__('px', 's = \'a\\n\'')"
        );
    }

    #[test]
    fn cell_magic_takes_first_line_and_body() {
        assert_eq!(
            parse_cell("%%px --targets 0,1\na = 1\nb = 2"),
            Cell::CellMagic {
                name: "px".into(),
                args: "--targets 0,1".into(),
                body: "a = 1\nb = 2".into(),
            }
        );
        assert_eq!(
            parse_cell("%%timeit"),
            Cell::CellMagic {
                name: "timeit".into(),
                args: "".into(),
                body: "".into()
            }
        );
    }

    #[test]
    fn cell_magic_becomes_one_call() {
        assert_eq!(
            parse_cell("%%px -b\nprint('hi')\n").into_python(),
            "__rparallel_cell_magic__('px', '-b', 'print(\\'hi\\')\\n')"
        );
    }

    #[test]
    fn cell_magic_ends_at_a_blank_line() {
        assert!(!cell_magic_complete("%%px"));
        assert!(!cell_magic_complete("%%px\na = 1"));
        assert!(cell_magic_complete("%%px\na = 1\n"));
        assert!(cell_magic_complete("%%px\na = 1\n   "));
    }

    #[test]
    fn percent_lines_inside_triple_quoted_strings_stay() {
        let code = "s = '''\n%not a magic\n'''\n%px 1";
        assert_eq!(
            rewrite_line_magics(code),
            "s = '''\n%not a magic\n'''\n__rparallel_magic__('px', '1')"
        );
    }
}
