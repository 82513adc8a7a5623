//! The branch barrier for gRPC branch handlers (feature `barrier`).

use dtm_barrier::{BarrierConfig, BranchBarrier};
use tonic::metadata::MetadataMap;

use crate::metadata::trans_info_from_metadata;

/// A [`BranchBarrier`] for an incoming gRPC branch call, from its `dtm-*` metadata, with the
/// default barrier table (Go: `BarrierFromGrpc`). Missing or malformed metadata is a
/// [`dtmcli::Error::InvalidInput`].
pub fn barrier_from_metadata(md: &MetadataMap) -> dtmcli::Result<BranchBarrier> {
    Ok(BranchBarrier::new(trans_info_from_metadata(md)?))
}

/// [`barrier_from_metadata`] with an explicit barrier configuration (table name).
pub fn barrier_from_metadata_with_config(
    md: &MetadataMap,
    config: BarrierConfig,
) -> dtmcli::Result<BranchBarrier> {
    Ok(BranchBarrier::with_config(
        trans_info_from_metadata(md)?,
        config,
    ))
}
