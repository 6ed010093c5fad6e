//! Showing engine output in the process that holds the client: text goes
//! to `sys.stdout` / `sys.stderr`, MIME bundles to `display` (the kernel's
//! builtin; IPython's or `print` elsewhere). What is shown, and with which
//! labels, is decided by `rparallel_magics::render`.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use rparallel_magics::render::{self, EngineOutput, Item, Shown};
use rparallel_protocol::Message;
use serde_json::Value;

use rparallel_client::Task;

/// Where output is published; found once per use.
pub struct Frontend<'py> {
    py: Python<'py>,
    sys: Bound<'py, PyModule>,
    display: Option<Bound<'py, PyAny>>,
    clear_output: Option<Bound<'py, PyAny>>,
    /// `Out[N:k]:` prompts in colour (IPython running, `%colors` not
    /// NoColor); looked up when a prompt is first shown.
    colour: std::cell::OnceCell<bool>,
}

impl<'py> Frontend<'py> {
    pub fn new(py: Python<'py>) -> PyResult<Self> {
        let builtins = py.import("builtins")?;
        let display = match builtins.getattr("display") {
            Ok(display) => Some(display),
            Err(_) => py
                .import("IPython.display")
                .and_then(|m| m.getattr("display"))
                .ok(),
        };
        Ok(Frontend {
            py,
            sys: py.import("sys")?,
            display,
            clear_output: builtins.getattr("clear_output").ok(),
            colour: std::cell::OnceCell::new(),
        })
    }

    /// Writes `text` to `sys.stdout` or `sys.stderr`.
    pub fn write(&self, name: &str, text: &str) -> PyResult<()> {
        let stream = match name {
            "stderr" => "stderr",
            _ => "stdout",
        };
        self.sys.getattr(stream)?.call_method1("write", (text,))?;
        Ok(())
    }

    fn object(&self, value: &Value) -> PyResult<Bound<'py, PyAny>> {
        crate::convert::to_python(self.py, value)
    }

    /// Publishes a MIME bundle; with `display_id`, one that can be updated.
    pub fn display(
        &self,
        data: &Value,
        metadata: &Value,
        display_id: Option<&str>,
        update: bool,
    ) -> PyResult<()> {
        let Some(display) = &self.display else {
            let text = data["text/plain"].as_str().unwrap_or("");
            return self.write("stdout", &format!("{text}\n"));
        };
        let kwargs = PyDict::new(self.py);
        kwargs.set_item("raw", true)?;
        if metadata.as_object().is_some_and(|m| !m.is_empty()) {
            kwargs.set_item("metadata", self.object(metadata)?)?;
        }
        if let Some(id) = display_id {
            kwargs.set_item("display_id", id)?;
            if update {
                kwargs.set_item("update", true)?;
            }
        }
        display.call((self.object(data)?,), Some(&kwargs))?;
        Ok(())
    }

    pub fn clear(&self, wait: bool) -> PyResult<()> {
        if let Some(clear) = &self.clear_output {
            clear.call1((wait,))?;
        }
        Ok(())
    }

    pub fn show(&self, shown: &[Shown]) -> PyResult<()> {
        for item in shown {
            match item {
                Shown::Stream { name, text } => self.write(name, text)?,
                Shown::Display { data, metadata } => self.display(data, metadata, None, false)?,
                Shown::Result {
                    engine,
                    count,
                    data,
                    metadata,
                } => {
                    let data = render::result_bundle(*engine, *count, data, self.colour());
                    self.display(&data, metadata, None, false)?
                }
            }
        }
        self.flush()
    }

    /// A progress bar of `total` `unit`s (`rparallel._helpers.Progress`:
    /// a tqdm widget in a notebook, text in a terminal), with `update(done)`
    /// and `close(done)`.
    pub fn progress_bar(
        &self,
        total: usize,
        unit: &str,
        desc: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.py
            .import("rparallel._helpers")?
            .getattr("Progress")?
            .call1((total, unit, desc))
    }

    /// Whether `Out[N:k]:` prompts are coloured here.
    pub fn colour(&self) -> bool {
        *self.colour.get_or_init(|| ipython_colours(self.py))
    }

    pub fn flush(&self) -> PyResult<()> {
        for name in ["stdout", "stderr"] {
            self.sys.getattr(name)?.call_method0("flush")?;
        }
        Ok(())
    }
}

/// Whether the running IPython colours its output (`%colors`).
fn ipython_colours(py: Python<'_>) -> bool {
    let colours = || -> PyResult<bool> {
        let modules = py.import("sys")?.getattr("modules")?;
        if !modules.contains("IPython")? {
            return Ok(false);
        }
        let ip = modules.get_item("IPython")?.call_method0("get_ipython")?;
        if ip.is_none() {
            return Ok(false);
        }
        let colors: String = ip.getattr("colors")?.extract()?;
        Ok(!colors.eq_ignore_ascii_case("nocolor"))
    };
    colours().unwrap_or(false)
}

/// One output message of a request as a shown [`Item`], with its time stamp.
pub fn item(message: &Message) -> Option<(String, Item)> {
    let c = &message.content;
    let item = match message.msg_type() {
        "stream" => Item::Stream {
            name: c["name"].as_str().unwrap_or("stdout").to_string(),
            text: c["text"].as_str().unwrap_or("").to_string(),
        },
        "display_data" => Item::Display {
            data: c["data"].clone(),
            metadata: c["metadata"].clone(),
        },
        "execute_result" => Item::Result {
            count: c["execution_count"].as_u64().unwrap_or(0),
            data: c["data"].clone(),
            metadata: c["metadata"].clone(),
        },
        _ => return None,
    };
    Some((message.header.date.clone(), item))
}

/// Everything each engine produced so far, for grouping.
pub fn engine_outputs(engines: &[u32], tasks: &[Option<Task>]) -> Vec<EngineOutput> {
    engines
        .iter()
        .zip(tasks)
        .map(|(engine, task)| EngineOutput {
            engine: *engine,
            items: task
                .iter()
                .flat_map(|t| t.outputs.iter())
                .filter_map(|m| item(m))
                .collect(),
        })
        .collect()
}
