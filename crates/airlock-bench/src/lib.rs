//! airlock-bench
