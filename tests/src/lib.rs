//! kp-tests: multi-node integration tests of kpnode, in-process and with real processes.
//! Shared helpers live here; the scenarios are in `tests/tests/`.
