//! airlock-audit
