//! airlock-demo-server
