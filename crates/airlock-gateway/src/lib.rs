//! airlock-gateway
