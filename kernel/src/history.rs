//! The session's input history, answering `history_request`
//! (tail, range and search).

use serde_json::{json, Value};

/// This kernel's session number in history replies; requests for session 0
/// (meaning "current") or this number are answered from memory.
pub const SESSION: i64 = 1;

#[derive(Default)]
pub struct History {
    /// (line number, input, text/plain of the output if any)
    entries: Vec<(u32, String, Option<String>)>,
}

impl History {
    pub fn record(&mut self, line: u32, input: &str, output: Option<String>) {
        self.entries.push((line, input.to_string(), output));
    }

    /// The `history` list for a `history_request` content.
    pub fn answer(&self, request: &Value) -> Vec<Value> {
        let output = request["output"].as_bool().unwrap_or(false);
        let n = request["n"].as_u64().map(|n| n as usize);
        let picked: Vec<&(u32, String, Option<String>)> =
            match request["hist_access_type"].as_str().unwrap_or("") {
                "tail" => last(self.entries.iter().collect(), n.unwrap_or(10)),
                "range" => {
                    let session = request["session"].as_i64().unwrap_or(0);
                    if session != 0 && session != SESSION {
                        Vec::new()
                    } else {
                        let start = request["start"].as_u64().unwrap_or(0) as u32;
                        let stop = request["stop"].as_u64().map(|s| s as u32);
                        self.entries
                            .iter()
                            .filter(|(line, ..)| *line >= start && stop.is_none_or(|s| *line < s))
                            .collect()
                    }
                }
                "search" => {
                    let pattern = request["pattern"].as_str().unwrap_or("*");
                    let Ok(glob) = glob::Pattern::new(pattern) else {
                        return Vec::new();
                    };
                    let mut found: Vec<_> = self
                        .entries
                        .iter()
                        .filter(|(_, input, _)| glob.matches(input))
                        .collect();
                    if request["unique"].as_bool().unwrap_or(false) {
                        let mut seen = std::collections::HashSet::new();
                        found.reverse();
                        found.retain(|(_, input, _)| seen.insert(input.as_str()));
                        found.reverse();
                    }
                    match n {
                        Some(n) => last(found, n),
                        None => found,
                    }
                }
                _ => Vec::new(),
            };
        picked
            .into_iter()
            .map(|(line, input, out)| {
                if output {
                    json!([SESSION, line, [input, out]])
                } else {
                    json!([SESSION, line, input])
                }
            })
            .collect()
    }
}

fn last<T>(mut items: Vec<T>, n: usize) -> Vec<T> {
    let skip = items.len().saturating_sub(n);
    items.drain(..skip);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        let mut h = History::default();
        h.record(1, "a = 1", None);
        h.record(2, "print(a)", None);
        h.record(3, "a + 1", Some("2".into()));
        h.record(4, "print(a)", None);
        h
    }

    #[test]
    fn tail_range_and_search() {
        let h = history();
        let tail = h.answer(&json!({"hist_access_type": "tail", "n": 2}));
        assert_eq!(
            tail,
            vec![json!([1, 3, "a + 1"]), json!([1, 4, "print(a)"])]
        );
        let range =
            h.answer(&json!({"hist_access_type": "range", "session": 0, "start": 2, "stop": 4}));
        assert_eq!(range.len(), 2);
        let search =
            h.answer(&json!({"hist_access_type": "search", "pattern": "print*", "unique": true}));
        assert_eq!(search, vec![json!([1, 4, "print(a)"])]);
        let with_output = h.answer(&json!({"hist_access_type": "tail", "n": 1, "output": true}));
        assert_eq!(with_output, vec![json!([1, 4, ["print(a)", null]])]);
        let other = h.answer(&json!({"hist_access_type": "range", "session": -3}));
        assert!(other.is_empty());
    }
}
