//! XA local transactions (in progress).
