//! The generated protobuf messages and tonic stubs of DTM's gRPC API.

/// `package dtmgimp`: the DTM server's gRPC API (`/dtmgimp.Dtm/<Rpc>`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod dtmgimp {
    tonic::include_proto!("dtmgimp");
}

/// `package workflow`: the workflow callback service (`/workflow.Workflow/Execute`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod workflow {
    tonic::include_proto!("workflow");
}

#[cfg(test)]
mod tests {
    use super::dtmgimp::*;
    use prost::Message;

    /// The (field number, wire type) pairs of an encoded message, in order.
    fn tags(bytes: &[u8]) -> Vec<(u32, u8)> {
        let mut out = Vec::new();
        let mut buf = bytes;
        while !buf.is_empty() {
            let key = prost::encoding::decode_varint(&mut buf).unwrap();
            let (field, wt) = ((key >> 3) as u32, (key & 7) as u8);
            out.push((field, wt));
            match wt {
                0 => {
                    prost::encoding::decode_varint(&mut buf).unwrap();
                }
                2 => {
                    let n = prost::encoding::decode_varint(&mut buf).unwrap() as usize;
                    buf = &buf[n..];
                }
                other => panic!("unexpected wire type {other}"),
            }
        }
        out
    }

    #[test]
    fn field_numbers_match_dtm() {
        let o = DtmTransOptions {
            wait_result: true,
            timeout_to_fail: 1,
            retry_interval: 1,
            branch_headers: [("k".to_string(), "v".to_string())].into(),
            request_timeout: 1,
            retry_limit: 1,
        };
        // 4 (PassthroughHeaders) is retired.
        assert_eq!(
            tags(&o.encode_to_vec()),
            [(1, 0), (2, 0), (3, 0), (5, 2), (6, 0), (7, 0)]
        );
        let r = DtmRequest {
            gid: "g".into(),
            trans_type: "saga".into(),
            trans_options: Some(o),
            customed_data: "c".into(),
            bin_payloads: vec![vec![1].into(), vec![2].into()],
            query_prepared: "q".into(),
            steps: "[]".into(),
            req_extra: [("a".to_string(), "b".to_string())].into(),
            rollback_reason: "r".into(),
        };
        assert_eq!(
            tags(&r.encode_to_vec()),
            [
                (1, 2),
                (2, 2),
                (3, 2),
                (4, 2),
                (5, 2),
                (5, 2),
                (6, 2),
                (7, 2),
                (8, 2),
                (9, 2)
            ]
        );
        let b = DtmBranchRequest {
            gid: "g".into(),
            trans_type: "tcc".into(),
            branch_id: "01".into(),
            op: "try".into(),
            data: [("confirm".to_string(), "u".to_string())].into(),
            busi_payload: vec![1].into(),
        };
        assert_eq!(
            tags(&b.encode_to_vec()),
            [(1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (6, 2)]
        );
        let p = DtmProgressesReply {
            transaction: Some(DtmTransaction {
                gid: "g".into(),
                status: "s".into(),
                rollback_reason: "r".into(),
                result: "x".into(),
            }),
            progresses: vec![DtmProgress {
                status: "s".into(),
                bin_data: vec![1].into(),
                branch_id: "01".into(),
                op: "action".into(),
            }],
        };
        assert_eq!(tags(&p.encode_to_vec()), [(1, 2), (2, 2)]);
        let t = p.transaction.unwrap();
        assert_eq!(tags(&t.encode_to_vec()), [(1, 2), (2, 2), (3, 2), (4, 2)]);
        let pr = &p.progresses[0];
        assert_eq!(tags(&pr.encode_to_vec()), [(1, 2), (2, 2), (3, 2), (4, 2)]);
        let topic = DtmTopicRequest {
            topic: "t".into(),
            url: "u".into(),
            remark: "r".into(),
        };
        assert_eq!(tags(&topic.encode_to_vec()), [(1, 2), (2, 2), (3, 2)]);
        let gid = DtmGidReply { gid: "g".into() };
        assert_eq!(tags(&gid.encode_to_vec()), [(1, 2)]);
        let wf = super::workflow::WorkflowData {
            data: vec![1].into(),
        };
        assert_eq!(tags(&wf.encode_to_vec()), [(1, 2)]);
    }

    #[test]
    fn service_paths_match_dtm() {
        use super::dtmgimp::dtm_server::SERVICE_NAME;
        assert_eq!(SERVICE_NAME, "dtmgimp.Dtm");
        assert_eq!(
            super::workflow::workflow_server::SERVICE_NAME,
            "workflow.Workflow"
        );
    }
}
