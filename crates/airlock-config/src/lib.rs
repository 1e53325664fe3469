//! airlock-config
