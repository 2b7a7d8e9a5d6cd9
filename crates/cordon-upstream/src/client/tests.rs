//! Tests of the network providers against mock upstreams.
