//! Redis barrier (in progress).
