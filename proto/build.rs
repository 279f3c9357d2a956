//! Generates the tonic/prost code for the `.proto` files under `proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/switchback/v1/inference.proto",
            "proto/switchback/v1/controller.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
