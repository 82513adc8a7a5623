//! MongoDB barrier (in progress).
