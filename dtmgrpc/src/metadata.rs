//! Transaction info in gRPC metadata (dtm-protocol.md §3.4, §3.5).
//!
//! DTM and the SDKs send `dtm-gid`, `dtm-trans_type`, `dtm-branch_id`, `dtm-op` and
//! `dtm-dtm` (the DTM gRPC address when an SDK calls, empty when DTM calls), `dtm-phase2_url`
//! for XA actions, and every `branch_headers` entry.

use std::collections::BTreeMap;

use dtmcli::trace::{BranchSpanLayer, IdentitySource};
use dtmcli::{Error, Result, TransInfo};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};

/// Metadata key of the global id.
pub const GID: &str = "dtm-gid";
/// Metadata key of the transaction type.
pub const TRANS_TYPE: &str = "dtm-trans_type";
/// Metadata key of the branch id.
pub const BRANCH_ID: &str = "dtm-branch_id";
/// Metadata key of the op.
pub const OP: &str = "dtm-op";
/// Metadata key of the DTM server's gRPC address (empty when DTM itself calls).
pub const DTM: &str = "dtm-dtm";
/// Metadata key of an XA branch's phase-2 URL (sent by the SDK on XA actions only).
pub const PHASE2_URL: &str = "dtm-phase2_url";

/// The tower layer for tonic servers of branch handlers: each call runs in a `dtm.branch`
/// span named by its `dtm-*` metadata, a child of the trace context it carries (feature
/// `opentelemetry`; see [`dtmcli::trace`]).
///
/// ```no_run
/// let layer = dtmgrpc::branch_span_layer();
/// // tonic::transport::Server::builder().layer(layer).add_service(your_branch_service)
/// # let _ = layer;
/// ```
pub fn branch_span_layer() -> BranchSpanLayer {
    BranchSpanLayer::new(IDENTITY)
}

/// Where a gRPC branch call carries its transaction identity, for
/// [`dtmcli::trace::incoming_span`].
pub const IDENTITY: IdentitySource = IdentitySource::Headers {
    gid: GID,
    trans_type: TRANS_TYPE,
    branch_id: BRANCH_ID,
    op: OP,
};

/// A tonic interceptor that adds the current span's W3C trace context to a call's metadata
/// (nothing without feature `opentelemetry`). The SDK's calls to DTM use it; it serves any
/// other client stub too.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContext;

impl tonic::service::Interceptor for TraceContext {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        put_trace_context(req.metadata_mut());
        Ok(req)
    }
}

/// Writes the current span's trace context into `md`, replacing any there.
pub(crate) fn put_trace_context(md: &mut MetadataMap) {
    for (k, v) in dtmcli::trace::context_headers() {
        if let (Ok(k), Ok(v)) = (AsciiMetadataKey::from_bytes(k.as_bytes()), v.parse()) {
            md.insert(k, v);
        }
    }
}

/// The one rule for metadata values, read and sent alike: printable ASCII (0x20..=0x7e).
///
/// gRPC (and tonic's `to_str`) also lets a TAB through on reading, but refusing it when
/// the same value is sent on would accept a transaction the SDK cannot continue (a nested
/// TCC, an XA registration).
pub(crate) fn printable_ascii(v: &[u8]) -> bool {
    v.iter().all(|b| (0x20..=0x7e).contains(b))
}

/// Reads the transaction info of an incoming branch call from its metadata.
///
/// `dtm-gid`, `dtm-trans_type`, `dtm-branch_id` and `dtm-op` are required; `dtm-dtm` and
/// `dtm-phase2_url` are optional. A missing or empty value, one that is not printable ASCII
/// (0x20..=0x7e, the same rule [`branch_metadata`] applies when sending), one
/// [`dtmcli::TransInfo::from_pairs`] refuses, or an unknown transaction type, is an
/// [`Error::InvalidInput`] naming the key.
pub fn trans_info_from_metadata(md: &MetadataMap) -> Result<TransInfo> {
    let get = |key: &str, required: bool| -> Result<Option<String>> {
        match md.get(key) {
            None if required => Err(Error::invalid(format!(
                "invalid trans info: gRPC metadata `{key}` is missing"
            ))),
            None => Ok(None),
            Some(v) => match std::str::from_utf8(v.as_bytes()) {
                Ok("") if required => Err(Error::invalid(format!(
                    "invalid trans info: gRPC metadata `{key}` is empty"
                ))),
                Ok(s) if printable_ascii(s.as_bytes()) => Ok(Some(s.to_string())),
                _ => Err(Error::invalid(format!(
                    "invalid trans info: gRPC metadata `{key}` is not printable ASCII"
                ))),
            },
        }
    };
    let mut pairs = Vec::with_capacity(6);
    for (key, name, required) in [
        (GID, "gid", true),
        (TRANS_TYPE, "trans_type", true),
        (BRANCH_ID, "branch_id", true),
        (OP, "op", true),
        (DTM, "dtm", false),
        (PHASE2_URL, "phase2_url", false),
    ] {
        if let Some(v) = get(key, required)? {
            pairs.push((name, v));
        }
    }
    TransInfo::from_pairs(pairs)
}

/// The transaction info of an incoming tonic request (see [`trans_info_from_metadata`]).
pub fn trans_info<T>(request: &tonic::Request<T>) -> Result<TransInfo> {
    trans_info_from_metadata(request.metadata())
}

fn key(name: &str) -> Result<AsciiMetadataKey> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid(format!(
            "gRPC metadata key {name:?} must be lower-case"
        )));
    }
    AsciiMetadataKey::from_bytes(name.as_bytes())
        .map_err(|_| Error::invalid(format!("{name:?} is not a valid gRPC metadata key")))
}

fn value(name: &str, v: &str) -> Result<AsciiMetadataValue> {
    printable_ascii(v.as_bytes())
        .then(|| AsciiMetadataValue::try_from(v).ok())
        .flatten()
        .ok_or_else(|| {
            Error::invalid(format!(
                "the value of gRPC metadata {name:?} must be printable ASCII"
            ))
        })
}

/// Checks that branch headers can travel as gRPC metadata: lower-case ASCII keys (not
/// `-bin`), printable ASCII values.
pub fn check_branch_headers(headers: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in headers {
        key(k)?;
        value(k, v)?;
    }
    Ok(())
}

/// The metadata the SDK sends when it calls a branch itself (TCC try, XA action, msg
/// back-check): the transaction info (`dtm-dtm` and `dtm-phase2_url` when set) and
/// `headers`.
pub fn branch_metadata(
    info: &TransInfo,
    headers: &BTreeMap<String, String>,
) -> Result<MetadataMap> {
    let mut md = MetadataMap::new();
    for (k, v) in headers {
        md.insert(key(k)?, value(k, v)?);
    }
    let mut put = |k: &'static str, v: &str| -> Result<()> {
        md.insert(AsciiMetadataKey::from_static(k), value(k, v)?);
        Ok(())
    };
    put(GID, &info.gid)?;
    put(TRANS_TYPE, info.trans_type.as_str())?;
    put(BRANCH_ID, &info.branch_id)?;
    put(OP, info.op.as_str())?;
    put(DTM, info.dtm.as_deref().unwrap_or(""))?;
    if let Some(p) = &info.phase2_url {
        put(PHASE2_URL, p)?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtmcli::{Op, TransType};

    #[test]
    fn round_trip() {
        let mut info = TransInfo::new("g1", TransType::Xa, "01", Op::Action);
        info.dtm = Some("127.0.0.1:36790".into());
        info.phase2_url = Some("127.0.0.1:1/busi.Busi/TransInXa".into());
        let headers = BTreeMap::from([("test_header".to_string(), "v".to_string())]);
        let md = branch_metadata(&info, &headers).unwrap();
        assert_eq!(md.get("test_header").unwrap(), "v");
        assert_eq!(md.get("dtm-trans_type").unwrap(), "xa");
        assert_eq!(trans_info_from_metadata(&md).unwrap(), info);
    }

    #[test]
    fn dtm_empty_is_none() {
        let info = TransInfo::new("g1", TransType::Saga, "01", Op::Compensate);
        let md = branch_metadata(&info, &BTreeMap::new()).unwrap();
        assert_eq!(md.get("dtm-dtm").unwrap(), "");
        let back = trans_info_from_metadata(&md).unwrap();
        assert_eq!(back.dtm, None);
        assert_eq!(back.op, Op::Compensate);
    }

    #[test]
    fn missing_and_malformed() {
        let info = TransInfo::new("g1", TransType::Saga, "01", Op::Action);
        let full = branch_metadata(&info, &BTreeMap::new()).unwrap();
        for k in [GID, TRANS_TYPE, BRANCH_ID, OP] {
            let mut md = full.clone();
            md.remove(k);
            let e = trans_info_from_metadata(&md).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
            let mut md = full.clone();
            md.insert(AsciiMetadataKey::from_static(k), "".parse().unwrap());
            assert!(matches!(
                trans_info_from_metadata(&md),
                Err(Error::InvalidInput(_))
            ));
        }
        let mut md = full.clone();
        md.insert("dtm-trans_type", "bogus".parse().unwrap());
        assert!(matches!(
            trans_info_from_metadata(&md),
            Err(Error::InvalidInput(_))
        ));
        let mut headers = full.into_headers();
        headers.insert("dtm-gid", http::HeaderValue::from_bytes(b"g\xff1").unwrap());
        let md = MetadataMap::from_headers(headers);
        let e = trans_info_from_metadata(&md).unwrap_err();
        assert!(e.to_string().contains("dtm-gid"), "{e}");
        for bad in ["Upper", "x-bin", "sp ace", ""] {
            let h = BTreeMap::from([(bad.to_string(), "v".to_string())]);
            assert!(check_branch_headers(&h).is_err(), "{bad}");
        }
        let h = BTreeMap::from([("ok".to_string(), "caf\u{e9}".to_string())]);
        assert!(check_branch_headers(&h).is_err());
    }

    /// Every byte a metadata value can hold is accepted on reading exactly when it is
    /// accepted on sending (TAB included: refused both ways).
    #[test]
    fn one_rule_for_reading_and_sending() {
        let base = TransInfo::new("g1", TransType::Xa, "01", Op::Action);
        let full = branch_metadata(&base, &BTreeMap::new()).unwrap();
        for b in 0u8..=255 {
            let text = format!("a{}b", b as char);
            let Ok(hv) = http::HeaderValue::from_bytes(&[b'a', b, b'b']) else {
                continue;
            };
            let mut headers = full.clone().into_headers();
            headers.insert(PHASE2_URL, hv);
            let read = trans_info_from_metadata(&MetadataMap::from_headers(headers));
            let mut info = base.clone();
            info.phase2_url = Some(text.clone());
            let sent = branch_metadata(&info, &BTreeMap::new());
            let header = BTreeMap::from([("h".to_string(), text.clone())]);
            let as_header = check_branch_headers(&header);
            let printable = (0x20..=0x7e).contains(&b);
            assert_eq!(read.is_ok(), printable, "read {b:#x}");
            assert_eq!(sent.is_ok(), printable, "sent {b:#x}");
            assert_eq!(as_header.is_ok(), printable, "header {b:#x}");
            if let Ok(info) = read {
                // What was read is sent on unchanged.
                let again = branch_metadata(&info, &BTreeMap::new()).unwrap();
                assert_eq!(again.get(PHASE2_URL).unwrap().as_bytes(), text.as_bytes());
            }
        }
        let mut md = full.clone();
        md.insert(GID, "g\t1".parse().unwrap());
        assert!(trans_info_from_metadata(&md).is_err());
    }
}
