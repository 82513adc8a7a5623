//! Nothing: this crate only asks for the workspace's dependencies at the features of a whole
//! build, so that `scripts/check-features.sh` compiles them once (see
//! `scripts/feature-pin.sh`).
