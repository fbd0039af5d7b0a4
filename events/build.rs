//! Compiles the `.proto` catalog with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const FILES: &[&str] = &[
        "cloudcafe/envelope/v1/envelope.proto",
        "cloudcafe/orders/v1/orders.proto",
        "cloudcafe/orders/v1/legacy.proto",
        "cloudcafe/inventory/v1/inventory.proto",
        "cloudcafe/loyalty/v1/loyalty.proto",
        "cloudcafe/menu/v1/menu.proto",
        "kpl/aggregation.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(FILES, ["proto"])?;
    prost_build::Config::new()
        // `Name` gives every message its fully qualified type name: that string is the
        // envelope's `event_type`, so it can never drift from the schema.
        .enable_type_names()
        // `bytes` fields decode as `Bytes`: payloads are sliced from the record, not copied.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
