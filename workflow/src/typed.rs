//! Typed workflows and steps: inputs, step values and results as serde types, recorded as
//! JSON, over the byte API (which, and the Go record format, keep working beside them).

use std::future::Future;

use dtmcli::{Error, Result, TransInfo};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::options::WfOptions;
use crate::registry::Workflows;
use crate::wf::Wf;

impl Wf {
    /// A local step of the current branch whose value is recorded as JSON: run once, and on
    /// replay (a resumed workflow) decoded from its record without running `f` again. A
    /// record that does not decode into `T` (the step's type changed while the workflow was
    /// in flight) is [`Error::RecordType`], naming the gid, the branch and the type.
    pub async fn step<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(TransInfo) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let bytes = self
            .do_(|info| async move { encode(&f(info).await?) })
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| self.record_type::<T>(e))
    }

    /// The error of a record that is not a `T`.
    fn record_type<T>(&self, e: serde_json::Error) -> Error {
        Error::RecordType {
            gid: self.gid().to_string(),
            branch: self.branch_id(),
            op: self.op().to_string(),
            type_name: std::any::type_name::<T>(),
            reason: json_error(&e),
        }
    }
}

impl Workflows {
    /// Registers a workflow whose input `I` and result `O` are serde types, carried as JSON
    /// (run it with [`Workflows::execute_typed`], or with `execute` and JSON bytes). An
    /// input that does not decode into `I` is [`Error::InvalidInput`] before any step runs.
    pub fn register_typed<I, O, F, Fut>(&self, name: &str, options: WfOptions, f: F) -> Result<()>
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(Wf, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O>> + Send + 'static,
    {
        self.register_with_options(name, options, move |wf, input| {
            let run = serde_json::from_slice::<I>(&input)
                .map_err(|e| {
                    Error::invalid(format!(
                        "workflow {} {}: the input is not a {}: {}",
                        wf.name(),
                        wf.gid(),
                        std::any::type_name::<I>(),
                        json_error(&e)
                    ))
                })
                .map(|input| f(wf, input));
            async move { encode(&run?.await?) }
        })
    }

    /// Runs (or resumes, or reads the result of) the typed workflow `name` as `gid` with
    /// `input` ([`Workflows::execute`]), and decodes its result. A result that does not
    /// decode into `O` is [`Error::RecordType`] (branch `00`, op `result`).
    pub async fn execute_typed<I, O>(&self, name: &str, gid: &str, input: &I) -> Result<O>
    where
        I: Serialize,
        O: DeserializeOwned,
    {
        let bytes = self.execute(name, gid, &encode(input)?).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::RecordType {
            gid: gid.to_string(),
            branch: "00".to_string(),
            op: "result".to_string(),
            type_name: std::any::type_name::<O>(),
            reason: json_error(&e),
        })
    }
}

/// What is wrong with a JSON text, without quoting it ([`dtmcli::redact::json_error`]).
pub(crate) fn json_error(e: &serde_json::Error) -> String {
    dtmcli::redact::json_error(e)
}

/// `value` as JSON bytes.
fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decode_error_does_not_quote_the_value() {
        let e = serde_json::from_str::<i64>(r#""hunter2-secret""#).unwrap_err();
        assert!(
            e.to_string().contains("hunter2-secret"),
            "serde quotes it: {e}"
        );
        let text = json_error(&e);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("line 1 column"), "{text}");
    }
}
