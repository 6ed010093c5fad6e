//! The flags of a load-balanced task, as the scheduler reads them from
//! its metadata (ipyparallel's names): where it may run, how often it runs
//! again, what it waits for, how long it may wait, and its label.

use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFlags {
    /// Engines it may run on (None: any).
    pub targets: Option<Vec<u32>>,
    /// Runs again (on another engine) this often after failing.
    pub retries: u32,
    /// Time dependency: msg_ids, or `Dependency.as_dict()`.
    pub after: Option<Value>,
    /// Location dependency, in the same forms.
    pub follow: Option<Value>,
    /// Seconds it may wait in the scheduler's queue.
    pub timeout: Option<f64>,
    /// A name of the user's for the task.
    pub label: Option<String>,
}

impl TaskFlags {
    /// Writes the flags that are set into a request's metadata.
    pub fn write(&self, metadata: &mut Value) {
        if let Some(targets) = &self.targets {
            metadata["targets"] = targets.as_slice().into();
        }
        if self.retries > 0 {
            metadata["retries"] = self.retries.into();
        }
        for (key, dependency) in [("after", &self.after), ("follow", &self.follow)] {
            if let Some(dependency) = dependency {
                metadata[key] = dependency.clone();
            }
        }
        if let Some(timeout) = self.timeout {
            metadata["timeout"] = timeout.into();
        }
        if let Some(label) = &self.label {
            metadata["label"] = label.as_str().into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_set_flags_are_written() {
        let mut metadata = json!({});
        TaskFlags::default().write(&mut metadata);
        assert_eq!(metadata, json!({}));
        let flags = TaskFlags {
            targets: Some(vec![1, 2]),
            retries: 2,
            after: Some(json!(["m1"])),
            follow: None,
            timeout: Some(0.5),
            label: Some("step".into()),
        };
        flags.write(&mut metadata);
        assert_eq!(
            metadata,
            json!({"targets": [1, 2], "retries": 2, "after": ["m1"], "timeout": 0.5, "label": "step"})
        );
    }
}
