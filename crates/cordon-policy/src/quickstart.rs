//! The built-in quickstart policy (`examples/quickstart/cordon.yaml`, compiled in).

pub const QUICKSTART_YAML: &str = include_str!("../../../examples/quickstart/cordon.yaml");
pub const QUICKSTART_ORIGIN: &str = "built-in quickstart policy";
