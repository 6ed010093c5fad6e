//! How engine output is shown in the kernel: labels (`[stdout:N]`,
//! `[output:N]`, `Out[N:k]:`), grouping of finished output, and the line
//! buffering that keeps live streams whole. Pure: the caller publishes.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::options::GroupBy;

/// One thing an engine produced for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Stream {
        name: String,
        text: String,
    },
    Display {
        data: Value,
        metadata: Value,
    },
    /// The value of the cell's last expression; `count` is the engine's
    /// execution count.
    Result {
        count: u64,
        data: Value,
        metadata: Value,
    },
}

/// One engine's output for a request, in the order it was produced. `at`
/// is a sortable time stamp per item (the engine's message dates), used to
/// interleave engines for `--group-outputs=order`.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOutput {
    pub engine: u32,
    pub items: Vec<(String, Item)>,
}

/// What the kernel publishes: text on a stream, or a MIME bundle.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    Stream {
        name: String,
        text: String,
    },
    Display {
        data: Value,
        metadata: Value,
    },
    /// An engine's `Out[N:k]:` value, labelled when shown
    /// ([`result_bundle`]: the label's colour depends on the frontend).
    Result {
        engine: u32,
        count: u64,
        data: Value,
        metadata: Value,
    },
}

/// `[stdout:N] text` for one line; `[stdout:N]` then the lines otherwise.
/// Always ends with a newline.
pub fn stream_text(name: &str, engine: u32, text: &str) -> String {
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.contains('\n') {
        format!("[{name}:{engine}]\n{body}\n")
    } else {
        format!("[{name}:{engine}] {body}\n")
    }
}

/// The line `--verbose` prints first.
pub fn verbose_line(engines: &[u32]) -> String {
    format!("Parallel execution on engine(s): {engines:?}\n")
}

/// The header shown above an engine's display.
pub fn output_header(engine: u32) -> String {
    format!("[output:{engine}]\n")
}

/// IPython's colour of `Out[n]:` prompts in terminals and notebooks.
const OUT_COLOUR: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

/// An engine's result as a bundle labelled `Out[N:k]:` (in IPython's
/// prompt colour when `colour`). Plain text and HTML carry the label;
/// other rich types (images) are kept as they are.
pub fn result_bundle(engine: u32, count: u64, data: &Value, colour: bool) -> Value {
    let prompt = format!("Out[{engine}:{count}]:");
    let coloured = if colour {
        format!("{OUT_COLOUR}{prompt}{RESET}")
    } else {
        prompt.clone()
    };
    let mut bundle = data.as_object().cloned().unwrap_or_default();
    let text = data["text/plain"].as_str().unwrap_or("");
    let plain = if text.contains('\n') {
        format!("{coloured}\n{text}")
    } else {
        format!("{coloured} {text}")
    };
    bundle.insert("text/plain".into(), json!(plain));
    if let Some(html) = data["text/html"].as_str() {
        let html = format!("<pre>{prompt}</pre>\n{html}");
        bundle.insert("text/html".into(), json!(html));
    }
    Value::Object(bundle)
}

/// What one item looks like once published, labelled with its engine.
pub fn show_item(engine: u32, item: &Item) -> Vec<Shown> {
    match item {
        Item::Stream { text, .. } if text.is_empty() => vec![],
        Item::Stream { name, text } => vec![Shown::Stream {
            name: name.clone(),
            text: stream_text(name, engine, text),
        }],
        Item::Display { data, metadata } => vec![
            Shown::Stream {
                name: "stdout".into(),
                text: output_header(engine),
            },
            Shown::Display {
                data: data.clone(),
                metadata: metadata.clone(),
            },
        ],
        Item::Result {
            count,
            data,
            metadata,
        } => vec![Shown::Result {
            engine,
            count: *count,
            data: data.clone(),
            metadata: metadata.clone(),
        }],
    }
}

/// The results (`Out[N:k]:`) of engines in ascending order.
pub fn results(outputs: &[EngineOutput]) -> Vec<Shown> {
    let mut sorted: Vec<&EngineOutput> = outputs.iter().collect();
    sorted.sort_by_key(|o| o.engine);
    sorted
        .into_iter()
        .flat_map(|o| {
            o.items
                .iter()
                .filter(|(_, item)| matches!(item, Item::Result { .. }))
                .flat_map(|(_, item)| show_item(o.engine, item))
        })
        .collect()
}

/// Everything finished requests produced, arranged as `by` says.
pub fn arrange(outputs: &[EngineOutput], by: GroupBy) -> Vec<Shown> {
    let mut sorted: Vec<&EngineOutput> = outputs.iter().collect();
    sorted.sort_by_key(|o| o.engine);
    match by {
        GroupBy::Type => {
            let mut shown = Vec::new();
            for kind in [Kind::Stdout, Kind::Stderr, Kind::Display, Kind::Result] {
                for o in &sorted {
                    shown.extend(of_kind(o, kind));
                }
            }
            shown
        }
        GroupBy::Engine => sorted
            .iter()
            .flat_map(|o| {
                [Kind::Stdout, Kind::Stderr, Kind::Display, Kind::Result]
                    .into_iter()
                    .flat_map(move |kind| of_kind(o, kind))
            })
            .collect(),
        GroupBy::Order => {
            let mut all: Vec<(&str, u32, usize, &Item)> = sorted
                .iter()
                .flat_map(|o| {
                    o.items
                        .iter()
                        .enumerate()
                        .map(move |(i, (at, item))| (at.as_str(), o.engine, i, item))
                })
                .collect();
            all.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
            let mut shown = Vec::new();
            // Neighbouring chunks of one engine's stream read as one block.
            let mut run: Option<(u32, String, String)> = None;
            for (_, engine, _, item) in all {
                if let Item::Stream { name, text } = item {
                    match &mut run {
                        Some((e, n, t)) if *e == engine && n == name => t.push_str(text),
                        _ => {
                            flush_run(&mut run, &mut shown);
                            run = Some((engine, name.clone(), text.clone()));
                        }
                    }
                } else {
                    flush_run(&mut run, &mut shown);
                    shown.extend(show_item(engine, item));
                }
            }
            flush_run(&mut run, &mut shown);
            shown
        }
    }
}

fn flush_run(run: &mut Option<(u32, String, String)>, shown: &mut Vec<Shown>) {
    if let Some((engine, name, text)) = run.take() {
        shown.extend(show_item(engine, &Item::Stream { name, text }));
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Stdout,
    Stderr,
    Display,
    Result,
}

/// One engine's output of one kind; its streams joined into one block.
fn of_kind(o: &EngineOutput, kind: Kind) -> Vec<Shown> {
    let stream = |wanted: &str| -> Vec<Shown> {
        let text: String = o
            .items
            .iter()
            .filter_map(|(_, item)| match item {
                Item::Stream { name, text } if name == wanted => Some(text.as_str()),
                _ => None,
            })
            .collect();
        show_item(
            o.engine,
            &Item::Stream {
                name: wanted.into(),
                text,
            },
        )
    };
    match kind {
        Kind::Stdout => stream("stdout"),
        Kind::Stderr => stream("stderr"),
        Kind::Display => o
            .items
            .iter()
            .filter(|(_, item)| matches!(item, Item::Display { .. }))
            .flat_map(|(_, item)| show_item(o.engine, item))
            .collect(),
        Kind::Result => o
            .items
            .iter()
            .filter(|(_, item)| matches!(item, Item::Result { .. }))
            .flat_map(|(_, item)| show_item(o.engine, item))
            .collect(),
    }
}

/// Holds back the unfinished last line of a live stream, so a label never
/// lands in the middle of a line. A partial line that waits longer than
/// `patience` is let out anyway (a progress dot must not wait forever).
#[derive(Debug, Default)]
pub struct LineBuffer {
    partial: String,
    since: Option<Instant>,
}

impl LineBuffer {
    /// Adds `text`; returns the complete lines now available.
    pub fn push(&mut self, text: &str, now: Instant) -> Option<String> {
        self.partial.push_str(text);
        match self.partial.rfind('\n') {
            Some(at) => {
                let rest = self.partial.split_off(at + 1);
                let lines = std::mem::replace(&mut self.partial, rest);
                self.since = (!self.partial.is_empty()).then_some(now);
                Some(lines)
            }
            None => {
                if self.since.is_none() && !self.partial.is_empty() {
                    self.since = Some(now);
                }
                None
            }
        }
    }

    /// The held-back text, if it waited longer than `patience`.
    pub fn overdue(&mut self, now: Instant, patience: Duration) -> Option<String> {
        match self.since {
            Some(since) if now.duration_since(since) >= patience => self.flush(),
            _ => None,
        }
    }

    /// Everything held back (the request finished).
    pub fn flush(&mut self) -> Option<String> {
        self.since = None;
        (!self.partial.is_empty()).then(|| std::mem::take(&mut self.partial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str, text: &str) -> Item {
        Item::Stream {
            name: name.into(),
            text: text.into(),
        }
    }

    fn texts(shown: &[Shown]) -> Vec<String> {
        shown
            .iter()
            .map(|s| match s {
                Shown::Stream { name, text } => format!("{name}|{text}"),
                Shown::Display { data, .. } => {
                    format!("display|{}", data["text/plain"].as_str().unwrap_or(""))
                }
                Shown::Result {
                    engine,
                    count,
                    data,
                    ..
                } => {
                    let data = result_bundle(*engine, *count, data, false);
                    format!("display|{}", data["text/plain"].as_str().unwrap_or(""))
                }
            })
            .collect()
    }

    #[test]
    fn stream_labels() {
        assert_eq!(stream_text("stdout", 0, "hi\n"), "[stdout:0] hi\n");
        assert_eq!(stream_text("stdout", 0, "hi"), "[stdout:0] hi\n");
        assert_eq!(stream_text("stderr", 3, "a\nb\n"), "[stderr:3]\na\nb\n");
        assert_eq!(stream_text("stdout", 1, "a\nb"), "[stdout:1]\na\nb\n");
    }

    #[test]
    fn result_labels_keep_rich_data() {
        let one = result_bundle(2, 5, &json!({"text/plain": "4242"}), false);
        assert_eq!(one["text/plain"], "Out[2:5]: 4242");
        let many = result_bundle(
            0,
            1,
            &json!({"text/plain": "a\nb", "text/html": "<b>x</b>", "image/png": "iVB"}),
            false,
        );
        assert_eq!(many["text/plain"], "Out[0:1]:\na\nb");
        assert_eq!(many["text/html"], "<pre>Out[0:1]:</pre>\n<b>x</b>");
        assert_eq!(many["image/png"], "iVB");
        // In colour, only the prompt is coloured, as IPython's `Out[n]:`.
        let red = result_bundle(2, 5, &json!({"text/plain": "4242"}), true);
        assert_eq!(red["text/plain"], "\x1b[31mOut[2:5]:\x1b[0m 4242");
    }

    fn sample() -> Vec<EngineOutput> {
        vec![
            EngineOutput {
                engine: 1,
                items: vec![
                    ("t1".into(), stream("stdout", "one\n")),
                    ("t4".into(), stream("stderr", "warn\n")),
                    (
                        "t5".into(),
                        Item::Result {
                            count: 3,
                            data: json!({"text/plain": "11"}),
                            metadata: json!({}),
                        },
                    ),
                ],
            },
            EngineOutput {
                engine: 0,
                items: vec![
                    ("t2".into(), stream("stdout", "zero\n")),
                    ("t3".into(), stream("stdout", "zero again\n")),
                    (
                        "t6".into(),
                        Item::Display {
                            data: json!({"text/plain": "pic"}),
                            metadata: json!({}),
                        },
                    ),
                ],
            },
        ]
    }

    #[test]
    fn grouped_by_type_then_ascending_engines() {
        assert_eq!(
            texts(&arrange(&sample(), GroupBy::Type)),
            vec![
                "stdout|[stdout:0]\nzero\nzero again\n",
                "stdout|[stdout:1] one\n",
                "stderr|[stderr:1] warn\n",
                "stdout|[output:0]\n",
                "display|pic",
                "display|Out[1:3]: 11",
            ]
        );
    }

    #[test]
    fn grouped_by_engine() {
        assert_eq!(
            texts(&arrange(&sample(), GroupBy::Engine)),
            vec![
                "stdout|[stdout:0]\nzero\nzero again\n",
                "stdout|[output:0]\n",
                "display|pic",
                "stdout|[stdout:1] one\n",
                "stderr|[stderr:1] warn\n",
                "display|Out[1:3]: 11",
            ]
        );
    }

    #[test]
    fn grouped_in_order_produced() {
        assert_eq!(
            texts(&arrange(&sample(), GroupBy::Order)),
            vec![
                "stdout|[stdout:1] one\n",
                "stdout|[stdout:0]\nzero\nzero again\n",
                "stderr|[stderr:1] warn\n",
                "display|Out[1:3]: 11",
                "stdout|[output:0]\n",
                "display|pic",
            ]
        );
    }

    #[test]
    fn only_results() {
        assert_eq!(texts(&results(&sample())), vec!["display|Out[1:3]: 11"]);
    }

    #[test]
    fn line_buffer_keeps_lines_whole() {
        let t0 = Instant::now();
        let mut b = LineBuffer::default();
        assert_eq!(b.push("ab", t0), None);
        assert_eq!(b.push("c\nde", t0), Some("abc\n".into()));
        assert_eq!(b.overdue(t0, Duration::from_millis(300)), None);
        let later = t0 + Duration::from_millis(400);
        assert_eq!(
            b.overdue(later, Duration::from_millis(300)),
            Some("de".into())
        );
        assert_eq!(b.flush(), None);
        assert_eq!(b.push("x\ny\n", later), Some("x\ny\n".into()));
        assert_eq!(b.flush(), None);
    }
}
