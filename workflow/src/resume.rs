//! A workflow's name and input as DTM stores them, and why a resume runs only those.
//!
//! `prepareWorkflow` stores the workflow's name and input in the transaction's `custom_data`
//! (`{"data":"<base64>","name":"<workflow>"}`, the Go SDK's layout), and DTM resumes an
//! unfinished workflow by calling the callback URL with that input as the body
//! (`dtmsvr/trans_type_workflow.go`). DTM does not authenticate that call: anyone who
//! reaches the URL can send any gid and body. So a resume runs nothing on the callback's
//! word. It asks DTM what it holds for the gid (`query`, which never creates anything) and
//! runs only a transaction DTM holds, of trans type `workflow`, under the name the callback
//! gives, with the input DTM stored.
//!
//! A callback whose body differs from the stored input is **refused**, not silently
//! corrected: DTM always sends exactly the stored bytes, so a different body did not come
//! from DTM, and refusing it makes the forgery visible (a `warn` log line and a 400 answer)
//! instead of running a workflow at a forger's bidding. Running the stored input would be
//! harmless; answering the forger as if all were well would hide the attempt.

use base64::Engine;
use dtmcli::{Error, Result, TransGlobal, TransType};
use serde::Deserialize;

use crate::transport::Transport;

/// The `custom_data` of workflow `name` with `input`, as the Go SDK writes it (no input is
/// `null`), and the id of the `run` that sends it: the transaction keeps the id of the run
/// that created it, which tells that run it is the workflow's first ([`crate::patch`]). The
/// Go SDK and DTM read the name and the data and ignore the rest.
pub(crate) fn custom_data(name: &str, input: &[u8], run: &str) -> String {
    let data = if input.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(input))
    };
    serde_json::json!({ "data": data, "name": name, "rs_run": run }).to_string()
}

/// A workflow's name and input read back from DTM's `custom_data`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) name: String,
    pub(crate) input: Vec<u8>,
    /// The run that created the transaction (empty when the Go SDK did).
    pub(crate) run: String,
}

impl Stored {
    /// Reads `custom_data` of workflow `gid`; a text that is not the workflow layout is
    /// [`Error::Decode`].
    pub(crate) fn parse(gid: &str, custom_data: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Custom {
            #[serde(default)]
            name: String,
            #[serde(default)]
            data: Option<String>,
            #[serde(default)]
            rs_run: String,
        }
        let bad = |reason: String| Error::Decode {
            url: format!("the custom_data DTM stores for {gid}"),
            reason,
            body: custom_data.chars().take(256).collect(),
        };
        let c: Custom = serde_json::from_str(custom_data)
            .map_err(|e| bad(format!("not a workflow's name and input: {e}")))?;
        let input = match c.data.as_deref() {
            None | Some("") => Vec::new(),
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| bad(format!("its input is not base64: {e}")))?,
        };
        Ok(Stored {
            name: c.name,
            input,
            run: c.rs_run,
        })
    }
}

/// The input DTM stored for workflow `name` / `gid`, which a resume callback with `body`
/// may run; [`Error::InvalidInput`] (and nothing run, nothing created) when DTM holds no
/// such transaction, when it is not a workflow of that name, or when `body` is not the
/// stored input.
pub(crate) async fn stored_input(
    transport: &Transport,
    name: &str,
    gid: &str,
    body: &[u8],
) -> Result<Vec<u8>> {
    let refuse = |why: &str| {
        tracing::warn!(gid, name, why, "workflow resume callback refused");
        Err(Error::invalid(format!(
            "resume callback for workflow {name:?} gid {gid:?} refused, nothing was run: {why}"
        )))
    };
    let Some(t) = transport.query(gid).await?.transaction else {
        return refuse("DTM holds no such transaction");
    };
    let stored = match held_workflow(gid, &t) {
        Ok(s) => s,
        Err(why) => return refuse(&why),
    };
    if stored.name != name {
        return refuse("DTM holds it as another workflow");
    }
    if stored.input != body {
        return refuse("its body is not the input DTM stored");
    }
    Ok(stored.input)
}

/// The workflow DTM holds as `t`, or why `t` is none.
fn held_workflow(gid: &str, t: &TransGlobal) -> std::result::Result<Stored, String> {
    if t.trans_type != TransType::Workflow.as_str() {
        return Err(format!("DTM holds it as a {:?} transaction", t.trans_type));
    }
    Stored::parse(gid, &t.custom_data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_data_round_trips_and_reads_the_go_layout() {
        let c = custom_data("transfer", br#"{"amount":30}"#, "r1");
        assert_eq!(
            c,
            r#"{"data":"eyJhbW91bnQiOjMwfQ==","name":"transfer","rs_run":"r1"}"#
        );
        let s = Stored::parse("g", &c).unwrap();
        assert_eq!(
            (s.name.as_str(), s.input.as_slice(), s.run.as_str()),
            ("transfer", &br#"{"amount":30}"#[..], "r1")
        );
        // The Go SDK's field order, no input, no run.
        let go = Stored::parse("g", r#"{"name":"w","data":null}"#).unwrap();
        assert_eq!(
            (go.name.as_str(), go.input.len(), go.run.len()),
            ("w", 0, 0)
        );
        assert_eq!(
            custom_data("w", b"", "r"),
            r#"{"data":null,"name":"w","rs_run":"r"}"#
        );
        for bad in ["", "[1]", r#"{"name":"w","data":"%%%"}"#] {
            assert!(
                matches!(Stored::parse("g", bad), Err(Error::Decode { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_a_workflow_is_held_as_one() {
        let mut t = TransGlobal::default();
        t.trans_type = "saga".into();
        t.custom_data = custom_data("w", b"x", "r");
        assert!(held_workflow("g", &t).is_err());
        t.trans_type = "workflow".into();
        assert_eq!(held_workflow("g", &t).unwrap().input, b"x");
    }
}
