//! How a step's result is stored in a DTM branch record: the [`RecordFormat`] of a
//! registry.
//!
//! The Go SDK stores the raw result ([`RecordFormat::Go`]). This SDK's default
//! ([`RecordFormat::Checked`]) prefixes it with one header line naming the kind of step and
//! its target, so that a replay can tell when the code now asks for a different step than the
//! one recorded (non-determinism), and stores binary results as base64 so they survive DTM's
//! JSON string field intact:
//!
//! ```text
//! rs1 <kind> <t|b> <label>\n<payload: text, or base64 when b>
//! ```
//!
//! Records without the header (written by another SDK) are replayed as raw text and match
//! any step.

use base64::Engine;
use bytes::Bytes;

const MAGIC: &str = "rs1";

/// How a registry's workflows store their step results on the DTM server (set with
/// [`crate::Workflows::with_record_format`]). Records are read back in the format the
/// registry has when it resumes a workflow: moving from `Checked` to `Go` while workflows
/// are unfinished would hand their replayed steps the header with the result (the other way
/// round is safe, the checked format reads a raw record as raw).
///
/// | | [`Checked`](RecordFormat::Checked) (default) | [`Go`](RecordFormat::Go) |
/// |---|---|---|
/// | a record holds | a header line (`rs1 <kind> <t\|b> <target>`) and the result | the raw result bytes, as the Go SDK writes them |
/// | non-determinism check per step | yes: a replay that asks for another kind of step or another target than the recorded one is [`dtmcli::Error::NonDeterministic`] | no: the step gets the recorded bytes, whatever it is now |
/// | binary results over HTTP | kept (base64 in the record) | refused ([`dtmcli::Error::InvalidInput`], the step is retried): DTM's HTTP API carries a record as JSON text; the Go SDK silently replaces the invalid bytes with U+FFFD instead |
/// | a Go service of the same name resumes the workflow | no: it would read the header as part of each result | yes, and this SDK resumes a workflow a Go service started |
///
/// Both formats keep the check that a finished run asked for every recorded action (it needs
/// only the branch ids), and both replay a record without the header as raw bytes. A
/// failure is recorded as its message in both (the Go SDK writes a gRPC failure as Go's
/// status text `rpc error: code = Aborted desc = <message>`, and a failed local step as the
/// bytes its function returned with the error; either side replays the other's record as a
/// failure with that text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecordFormat {
    /// This SDK's records, checked on replay (the default).
    #[default]
    Checked,
    /// The Go SDK's records: the raw bytes of each step's result.
    Go,
}

impl RecordFormat {
    /// The record DTM stores for a step of `kind` on `label` that produced `payload`.
    pub(crate) fn encode(self, kind: &str, label: &str, payload: &[u8]) -> Bytes {
        match self {
            RecordFormat::Checked => Bytes::from(encode(kind, label, payload).into_bytes()),
            RecordFormat::Go => Bytes::copy_from_slice(payload),
        }
    }

    /// A stored record read back; in the Go format every record is raw (`kind: None`), so
    /// it matches any step.
    pub(crate) fn decode(self, data: &[u8]) -> Record {
        match self {
            RecordFormat::Checked => decode(data),
            RecordFormat::Go => Record::raw(data),
        }
    }
}

/// A decoded step record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// `local`, `http`, `grpc`, `xa`, `commit`, `rollback`; `None` for foreign records.
    pub(crate) kind: Option<String>,
    /// The step's target (URL, gRPC method) when it has one.
    pub(crate) label: String,
    /// The result bytes (or the failure message).
    pub(crate) payload: Vec<u8>,
}

impl Record {
    /// A record without this SDK's header: the bytes are the result.
    fn raw(data: &[u8]) -> Self {
        Record {
            kind: None,
            label: String::new(),
            payload: data.to_vec(),
        }
    }
}

fn clean_label(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Encodes a record in the checked format, as the string DTM stores.
fn encode(kind: &str, label: &str, payload: &[u8]) -> String {
    let label = clean_label(label);
    match std::str::from_utf8(payload) {
        Ok(text) => format!("{MAGIC} {kind} t {label}\n{text}"),
        Err(_) => format!(
            "{MAGIC} {kind} b {label}\n{}",
            base64::engine::general_purpose::STANDARD.encode(payload)
        ),
    }
}

/// Decodes what DTM stored, in the checked format (a record without its header is raw).
fn decode(data: &[u8]) -> Record {
    let foreign = || Record::raw(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return foreign();
    };
    let Some((head, body)) = text.split_once('\n') else {
        return foreign();
    };
    let mut parts = head.splitn(4, ' ');
    let (Some(MAGIC), Some(kind), Some(enc), label) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next().unwrap_or(""),
    ) else {
        return foreign();
    };
    let payload = match enc {
        "t" => body.as_bytes().to_vec(),
        "b" => match base64::engine::general_purpose::STANDARD.decode(body) {
            Ok(p) => p,
            Err(_) => return foreign(),
        },
        _ => return foreign(),
    };
    Record {
        kind: Some(kind.to_string()),
        label: label.to_string(),
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let r = decode(encode("http", "POST http://h/x", b"{\"a\":1}").as_bytes());
        assert_eq!(r.kind.as_deref(), Some("http"));
        assert_eq!(r.label, "POST http://h/x");
        assert_eq!(r.payload, b"{\"a\":1}");
        let bin = [0u8, 159, 146, 150, 10];
        let r = decode(encode("grpc", "/p.S/M", &bin).as_bytes());
        assert_eq!(r.payload, bin);
        let r = decode(encode("local", "", b"").as_bytes());
        assert_eq!((r.kind.as_deref(), r.payload.len()), (Some("local"), 0));
        let r = decode(b"plain go result");
        assert_eq!(
            (r.kind, r.payload.as_slice()),
            (None, &b"plain go result"[..])
        );
    }

    #[test]
    fn the_go_format_is_the_raw_bytes_both_ways() {
        let bin = [0u8, 159, 146, 150, 10];
        assert_eq!(RecordFormat::Go.encode("grpc", "/p.S/M", &bin), &bin[..]);
        assert_eq!(RecordFormat::Go.encode("commit", "", b""), &b""[..]);
        // A Go record is never parsed, even when it looks like a checked one.
        let checked = RecordFormat::Checked.encode("local", "", b"x");
        let r = RecordFormat::Go.decode(&checked);
        assert_eq!((r.kind, r.payload), (None, checked.to_vec()));
        // The checked format reads a Go record as raw.
        let r = RecordFormat::Checked.decode(b"{\"a\":1}");
        assert_eq!((r.kind, r.payload.as_slice()), (None, &b"{\"a\":1}"[..]));
    }

    #[test]
    fn the_checked_format_is_unchanged() {
        assert_eq!(
            RecordFormat::Checked.encode("http", "POST http://h/x", b"ok"),
            &b"rs1 http t POST http://h/x\nok"[..]
        );
        assert_eq!(
            RecordFormat::Checked.encode("grpc", "/p.S/M", &[0xff]),
            &b"rs1 grpc b /p.S/M\n/w=="[..]
        );
    }
}
