//! airlock-protocol
