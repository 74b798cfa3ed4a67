//! End-to-end tests of Strata live in `tests/`: they start a real server on a temporary
//! data directory and a free port, and drive it with the `strata` client library, the
//! `strata` binary, `qemu-img` (NBD) and `coldsnap` when it is on PATH. This crate has no
//! code of its own.
