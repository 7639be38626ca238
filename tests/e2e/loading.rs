//! Bad plugin directories: each refused at load with an error that names what is wrong.

use std::path::Path;

use edgewise_host::runtime::plugin::LoadError;
use edgewise_tests::{copy_plugin, edit, load};

fn load_error(dir: &Path) -> LoadError {
    match load(dir, &[]) {
        Ok(plugin) => panic!("plugin `{}` was accepted", plugin.name()),
        Err(e) => e,
    }
}

fn with_component(bytes: &[u8]) -> tempfile::TempDir {
    let dir = copy_plugin("threshold");
    std::fs::write(dir.path().join("plugin.wasm"), bytes).expect("write component");
    dir
}

fn component(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("valid component text")
}

#[test]
fn a_core_module_is_refused_with_the_fix() {
    let dir = with_component(&wat::parse_str("(module)").expect("valid module"));
    let err = load_error(dir.path());
    assert!(matches!(err, LoadError::NotAComponent { .. }), "{err}");
    assert!(err.to_string().contains("--target wasm32-wasip2"), "{err}");
}

#[test]
fn bytes_that_are_not_wasm_are_refused() {
    let dir = with_component(b"#!/bin/sh\necho not wasm\n");
    let err = load_error(dir.path());
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    assert!(err.to_string().contains("plugin.wasm"), "{err}");
}

#[test]
fn a_component_importing_what_the_gateway_does_not_provide_is_refused() {
    let dir = with_component(&component(
        r#"(component (import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func)))))"#,
    ));
    let err = load_error(dir.path());
    assert!(matches!(err, LoadError::World { .. }), "{err}");
    assert!(
        err.to_string().contains("wasi:http/outgoing-handler"),
        "{err}"
    );
}

#[test]
fn a_component_without_the_handler_export_is_refused() {
    let dir = with_component(&component("(component)"));
    let err = load_error(dir.path());
    assert!(matches!(err, LoadError::World { .. }), "{err}");
    assert!(err.to_string().contains("edgewise:plugin/handler"), "{err}");
}

#[test]
fn a_missing_component_file_names_the_path() {
    let dir = copy_plugin("threshold");
    std::fs::remove_file(dir.path().join("plugin.wasm")).expect("remove");
    let err = load_error(dir.path());
    assert!(matches!(err, LoadError::ReadComponent { .. }), "{err}");
    assert!(err.to_string().contains("plugin.wasm"), "{err}");
}

#[test]
fn a_manifest_typo_names_the_file_the_key_and_the_line() {
    let dir = copy_plugin("threshold");
    edit(dir.path(), "plugin.toml", "subscribe =", "subcribe =");
    let err = load_error(dir.path()).to_string();
    assert!(
        err.contains("plugin.toml") && err.contains("subcribe") && err.contains("line 6"),
        "{err}"
    );
}

#[test]
fn a_model_file_that_is_not_onnx_is_refused_naming_the_model() {
    let dir = copy_plugin("vibration-fault");
    std::fs::write(
        dir.path().join("model/vibration.onnx"),
        b"this is not a model",
    )
    .expect("write");
    let err = load_error(dir.path());
    assert!(matches!(err, LoadError::Model { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("`vibration`") && text.contains("vibration.onnx"),
        "{text}"
    );
}

#[test]
fn a_declared_input_shape_that_does_not_fit_the_model_is_refused() {
    let dir = copy_plugin("vibration-fault");
    edit(
        dir.path(),
        "plugin.toml",
        "features = [1, 8]",
        "features = [1, 7]",
    );
    let err = load_error(dir.path());
    assert!(matches!(err, LoadError::Model { .. }), "{err}");
    assert!(err.to_string().contains("declared input shapes"), "{err}");
}

#[test]
fn a_declared_input_the_model_does_not_have_is_named() {
    let dir = copy_plugin("vibration-fault");
    edit(
        dir.path(),
        "plugin.toml",
        "features = [1, 8]",
        "samples = [1, 8]",
    );
    let err = load_error(dir.path()).to_string();
    assert!(
        err.contains("`samples`") && err.contains("features"),
        "{err}"
    );
}

#[test]
fn a_missing_model_file_names_it() {
    let dir = copy_plugin("voice-activity");
    std::fs::remove_file(dir.path().join("model/silero_vad_16k.onnx")).expect("remove");
    let err = load_error(dir.path()).to_string();
    assert!(
        err.contains("silero-vad") && err.contains("silero_vad_16k.onnx"),
        "{err}"
    );
}
