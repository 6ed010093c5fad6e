//! `kernel_info_reply` content, computed once.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::OnceCell;

use crate::python::{KernelState, PythonHandle};
use jupyter_protocol::{CodeMirrorMode, HelpLink, KernelInfoReply, LanguageInfo, ReplyStatus};
use rparallel_protocol::PROTOCOL_VERSION;

/// The kernel_info content, computed once from the Python thread.
#[derive(Clone, Default)]
pub struct KernelInfo(Arc<OnceCell<Value>>);

impl KernelInfo {
    pub async fn get<S: KernelState>(
        &self,
        python: &PythonHandle<S>,
        sink: &Arc<rparallel_pyexec::Sink>,
    ) -> Value {
        self.0
            .get_or_init(|| async {
                let sink = sink.clone();
                let version = python
                    .call(move |s| s.with_shell(&sink, |shell| shell.python_version()))
                    .await;
                kernel_info(&version)
            })
            .await
            .clone()
    }
}

/// `python_version` is `sys.version`'s first word, e.g. "3.11.7".
pub fn kernel_info(python_version: &str) -> serde_json::Value {
    let reply = KernelInfoReply {
        status: ReplyStatus::Ok,
        protocol_version: PROTOCOL_VERSION.to_string(),
        implementation: "rparallel".into(),
        implementation_version: env!("CARGO_PKG_VERSION").into(),
        language_info: LanguageInfo {
            name: "python".into(),
            version: python_version.into(),
            mimetype: Some("text/x-python".into()),
            file_extension: Some(".py".into()),
            pygments_lexer: Some("ipython3".into()),
            codemirror_mode: Some(CodeMirrorMode::ipython_code_mirror_mode()),
            nbconvert_exporter: Some("python".into()),
        },
        banner: format!(
            "Python {python_version} (rparallel {}) -- interactive parallel Python",
            env!("CARGO_PKG_VERSION")
        ),
        help_links: vec![HelpLink {
            text: "Python Reference".into(),
            url: "https://docs.python.org/3/".into(),
        }],
        debugger: false,
        error: None,
    };
    serde_json::to_value(reply).expect("kernel info serialises")
}
