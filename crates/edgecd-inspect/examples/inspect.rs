//! Prints the `ModelInfo` of each model file given on the command line as JSON.
//!
//! `cargo run -p edgecd-inspect --example inspect -- model.onnx other.tflite`

fn main() {
    let mut failed = false;
    for arg in std::env::args_os().skip(1) {
        match edgecd_inspect::inspect_path(std::path::Path::new(&arg)) {
            Ok(info) => println!(
                "{}",
                serde_json::to_string_pretty(&info).expect("serialize")
            ),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed));
}
