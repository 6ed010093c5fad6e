//! The options of `%%px`, `%pxconfig` and `%pxresult`, parsed with clap
//! from a shell-style argument line. A bad option is one line of usage
//! error, never a traceback.

use std::fmt;

use clap::{Args, Parser, ValueEnum};

/// How `--no-stream` output and `%pxresult` are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum GroupBy {
    /// All stdout, then all stderr, then displays, then results.
    #[default]
    Type,
    /// Everything of engine 0, then engine 1, ...
    Engine,
    /// Interleaved in the order it was produced.
    Order,
}

/// A misused magic: shown as `UsageError: <this>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// How a parallel execution runs; `None` keeps the active view's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOptions {
    /// A `--targets` spec, read against the live engines when it is used
    /// (`rparallel_client::Targets::parse`).
    pub targets: Option<String>,
    pub block: Option<bool>,
    pub stream: Option<bool>,
    pub verbose: Option<bool>,
    pub progress_after: Option<f64>,
    pub timeout: Option<f64>,
}

/// What `%%px` was asked to do besides running its body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PxOptions {
    pub exec: ExecOptions,
    pub group: Option<GroupBy>,
    /// Run the body in the kernel too.
    pub local: bool,
    /// Store the AsyncResult in the user's namespace under this name.
    pub save_name: Option<String>,
    /// The signal (a name or number) Ctrl-C sends the engines instead of
    /// an interrupt.
    pub signal_on_interrupt: Option<String>,
}

/// `%pxconfig`: new defaults for the active view.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigOptions {
    pub exec: ExecOptions,
    pub group: Option<GroupBy>,
}

#[derive(Args, Debug)]
struct ExecArgs {
    /// Engines to run on: all, 0, 1,3, 1:3, ::2, -1.
    #[arg(short = 't', long, allow_hyphen_values = true)]
    targets: Option<String>,
    /// Wait for the engines and show their output.
    #[arg(short = 'b', long, overrides_with = "noblock")]
    block: bool,
    /// Return an AsyncResult at once.
    #[arg(short = 'a', long, overrides_with = "block")]
    noblock: bool,
    /// Show output while the engines run.
    #[arg(long, overrides_with = "no_stream")]
    stream: bool,
    /// Show output grouped after the engines finish.
    #[arg(long = "no-stream", overrides_with = "stream")]
    no_stream: bool,
    /// Print the engines before running.
    #[arg(long, overrides_with = "no_verbose")]
    verbose: bool,
    #[arg(long = "no-verbose", overrides_with = "verbose")]
    no_verbose: bool,
    /// Show a progress bar once a blocking cell runs this long (seconds;
    /// -1: never).
    #[arg(long = "progress-after", value_parser = seconds_or_never, allow_hyphen_values = true)]
    progress_after: Option<f64>,
    /// Interrupt engines still running after this many seconds.
    #[arg(long, value_parser = non_negative, allow_hyphen_values = true)]
    timeout: Option<f64>,
}

#[derive(Args, Debug)]
struct OutputArgs {
    /// Order of grouped output: type, engine or order.
    #[arg(long = "group-outputs", value_enum)]
    group_outputs: Option<GroupBy>,
    /// Group outputs by engine (--group-outputs=engine).
    #[arg(short = 'e')]
    by_engine: bool,
    /// Outputs in the order produced (--group-outputs=order).
    #[arg(short = 'r')]
    by_order: bool,
}

#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct PxArgs {
    #[command(flatten)]
    exec: ExecArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Run the cell in the kernel too.
    #[arg(long)]
    local: bool,
    /// Save the AsyncResult under this name.
    #[arg(short = 'o', long = "out", visible_alias = "save-name")]
    out: Option<String>,
    /// Send this signal (e.g. SIGTERM) to the engines on Ctrl-C.
    #[arg(long = "signal-on-interrupt")]
    signal_on_interrupt: Option<String>,
}

#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct ConfigArgs {
    #[command(flatten)]
    exec: ExecArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Parser, Debug)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct ResultArgs {
    #[command(flatten)]
    output: OutputArgs,
}

fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!(
            "expected a number of seconds (0 or more), got {text:?}"
        )),
    }
}

/// Seconds, or -1 (any negative number) for never.
fn seconds_or_never(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v < 0.0 => Ok(-1.0),
        _ => non_negative(text),
    }
}

fn flag(on: bool, off: bool) -> Option<bool> {
    match (on, off) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

impl From<ExecArgs> for ExecOptions {
    fn from(a: ExecArgs) -> Self {
        ExecOptions {
            targets: a.targets,
            block: flag(a.block, a.noblock),
            stream: flag(a.stream, a.no_stream),
            verbose: flag(a.verbose, a.no_verbose),
            progress_after: a.progress_after,
            timeout: a.timeout,
        }
    }
}

impl OutputArgs {
    fn group(&self) -> Option<GroupBy> {
        if self.by_engine {
            Some(GroupBy::Engine)
        } else if self.by_order {
            Some(GroupBy::Order)
        } else {
            self.group_outputs
        }
    }
}

/// Splits an argument line like a shell, then lets clap read it.
fn parse<P: Parser>(magic: &str, line: &str) -> Result<P, UsageError> {
    let words = shlex::split(line)
        .ok_or_else(|| UsageError(format!("{magic}: unbalanced quotes in {line:?}")))?;
    P::try_parse_from(words).map_err(|e| {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or("bad arguments");
        UsageError(format!(
            "{magic}: {}",
            first.trim_start_matches("error: ").trim()
        ))
    })
}

/// Reads the argument line of `%%px`; `magic` (`%%px`, `%%px2`) names it
/// in errors.
pub fn parse_px(magic: &str, line: &str) -> Result<PxOptions, UsageError> {
    let args: PxArgs = parse(magic, line)?;
    Ok(PxOptions {
        group: args.output.group(),
        exec: args.exec.into(),
        local: args.local,
        save_name: args.out,
        signal_on_interrupt: args.signal_on_interrupt,
    })
}

/// Reads the argument line of `%pxconfig`.
pub fn parse_config(magic: &str, line: &str) -> Result<ConfigOptions, UsageError> {
    let args: ConfigArgs = parse(magic, line)?;
    Ok(ConfigOptions {
        group: args.output.group(),
        exec: args.exec.into(),
    })
}

/// Reads the argument line of `%pxresult` / `%result`.
pub fn parse_result(magic: &str, line: &str) -> Result<Option<GroupBy>, UsageError> {
    let args: ResultArgs = parse(magic, line)?;
    Ok(args.output.group())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_options_keeps_every_default() {
        assert_eq!(parse_px("%px", "").unwrap(), PxOptions::default());
    }

    #[test]
    fn every_px_option() {
        let o = parse_px(
            "%px",
            "--targets ::2 --noblock --no-stream --group-outputs=engine --local -o ar --verbose --progress-after 1.5 --timeout 3",
        )
        .unwrap();
        assert_eq!(o.exec.targets.as_deref(), Some("::2"));
        assert_eq!(o.exec.block, Some(false));
        assert_eq!(o.exec.stream, Some(false));
        assert_eq!(o.exec.verbose, Some(true));
        assert_eq!(o.exec.progress_after, Some(1.5));
        assert_eq!(o.exec.timeout, Some(3.0));
        assert_eq!(o.group, Some(GroupBy::Engine));
        assert!(o.local);
        assert_eq!(o.save_name.as_deref(), Some("ar"));
    }

    #[test]
    fn short_forms_and_aliases() {
        let o = parse_px("%px", "-t 1,3 -b -r --save-name x").unwrap();
        assert_eq!(o.exec.targets.as_deref(), Some("1,3"));
        assert_eq!(o.exec.block, Some(true));
        assert_eq!(o.group, Some(GroupBy::Order));
        assert_eq!(o.save_name.as_deref(), Some("x"));
        assert_eq!(parse_px("%px", "-a").unwrap().exec.block, Some(false));
        assert_eq!(parse_px("%px", "-e").unwrap().group, Some(GroupBy::Engine));
        assert_eq!(
            parse_px("%px", "--group-outputs type").unwrap().group,
            Some(GroupBy::Type)
        );
        assert_eq!(parse_px("%px", "--stream").unwrap().exec.stream, Some(true));
    }

    #[test]
    fn negative_targets_are_values_not_flags() {
        for line in ["--targets -1", "-t -1", "--targets -2:", "--targets=-1"] {
            assert!(
                parse_px("%px", line).unwrap().exec.targets.is_some(),
                "{line}"
            );
        }
    }

    #[test]
    fn the_last_of_opposite_flags_wins() {
        assert_eq!(
            parse_px("%px", "--block --noblock").unwrap().exec.block,
            Some(false)
        );
        assert_eq!(
            parse_px("%px", "--no-stream --stream").unwrap().exec.stream,
            Some(true)
        );
    }

    #[test]
    fn bad_options_are_one_line_usage_errors() {
        for line in [
            "--bogus",
            "--targets",
            "--group-outputs=sideways",
            "--progress-after soon",
            "--timeout -1",
            "'unbalanced",
            "extra",
        ] {
            let e = parse_px("%px", line).unwrap_err();
            assert!(!e.0.contains('\n'), "{line}: {e}");
            assert!(e.0.starts_with("%px: "), "{e}");
        }
        let e = parse_px("%%px", "--bogus").unwrap_err();
        assert_eq!(e.0, "%%px: unexpected argument '--bogus' found");
        // A negative number is a bad value, not an unknown argument.
        let e = parse_px("%%px", "--timeout -1").unwrap_err();
        assert!(
            e.0.contains("--timeout") && !e.0.contains("unexpected argument"),
            "{e}"
        );
    }

    #[test]
    fn config_and_result_options() {
        let c = parse_config("%pxconfig", "--targets 1 --block --no-verbose -e").unwrap();
        assert_eq!(c.exec.targets.as_deref(), Some("1"));
        assert_eq!(c.exec.block, Some(true));
        assert_eq!(c.exec.verbose, Some(false));
        assert_eq!(c.group, Some(GroupBy::Engine));
        assert!(parse_config("%pxconfig", "--local").is_err());
        assert_eq!(parse_result("%pxresult", "").unwrap(), None);
        assert_eq!(
            parse_result("%pxresult", "--group-outputs=order").unwrap(),
            Some(GroupBy::Order)
        );
        assert!(parse_result("%pxresult", "--targets 1").is_err());
    }
}
