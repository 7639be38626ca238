//! wasi-nn through the plugin gives exactly what tract gives when called directly.

use edgewise_tests::{copy_plugin, edit, message, model_file, worker};
use tract_onnx::prelude::*;

/// Runs `model` with tract directly on `inputs` of the given shapes.
fn native(model: &std::path::Path, inputs: &[(&[usize], &[f32])]) -> Vec<Vec<f32>> {
    let mut m = tract_onnx::onnx()
        .model_for_path(model)
        .expect("model parses");
    for (ix, (shape, _)) in inputs.iter().enumerate() {
        m.set_input_fact(ix, f32::fact(*shape).into())
            .expect("input fact");
    }
    let plan = m
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .expect("model optimises");
    let tensors = inputs
        .iter()
        .map(|(shape, values)| Tensor::from_shape(shape, values).map(TValue::from))
        .collect::<TractResult<TVec<_>>>()
        .expect("tensors");
    let outputs = plan.run(tensors).expect("model runs");
    outputs.iter().map(|o| floats(o.as_bytes())).collect()
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A deterministic pseudo-random signal in [-1, 1).
fn signal(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 8) as f32 / (1 << 23) as f32 - 1.0
        })
        .collect()
}

#[test]
fn the_vibration_model_through_the_plugin_equals_tract_called_directly() {
    let mut w = worker("onnx-runner", &[]);
    for seed in 0..20 {
        let features: Vec<f32> = signal(8, seed).iter().map(|v| v * 3.0 + 1.0).collect();
        let published = w
            .handle(&message("onnx/in", le_bytes(&features)))
            .unwrap_or_else(|e| panic!("{e}"));
        let expected = native(
            &model_file("vibration-fault", "vibration.onnx"),
            &[(&[1, 8], &features)],
        );
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].topic, "onnx/probabilities");
        assert_eq!(floats(&published[0].payload), expected[0], "seed {seed}");
    }
}

#[test]
fn silero_with_its_recurrent_state_through_the_plugin_equals_tract_called_directly() {
    let dir = copy_plugin("onnx-runner");
    std::fs::copy(
        model_file("voice-activity", "silero_vad_16k.onnx"),
        dir.path().join("model/model.onnx"),
    )
    .expect("copy model");
    edit(
        dir.path(),
        "plugin.toml",
        "inputs = { features = [1, 8] }",
        "inputs = { input = [1, 576], state = [2, 1, 128] }",
    );
    edit(
        dir.path(),
        "plugin.toml",
        "inputs = \"features:1x8\"",
        "inputs = \"input:1x576,state:2x1x128\"",
    );
    let plugin = edgewise_tests::load(dir.path(), &[]).unwrap_or_else(|e| panic!("{e}"));
    let mut w = edgewise_host::worker::Worker::new(std::sync::Arc::new(plugin), Default::default());

    let mut state = vec![0.0f32; 256];
    for frame in 0..5 {
        let audio: Vec<f32> = signal(576, frame).iter().map(|v| v * 0.3).collect();
        let mut payload = le_bytes(&audio);
        payload.extend(le_bytes(&state));
        let published = w
            .handle(&message("onnx/in", payload))
            .unwrap_or_else(|e| panic!("{e}"));
        let expected = native(
            &model_file("voice-activity", "silero_vad_16k.onnx"),
            &[(&[1, 576], &audio), (&[2, 1, 128], &state)],
        );
        let topics: Vec<&str> = published.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(topics, ["onnx/output", "onnx/stateN"]);
        assert_eq!(
            floats(&published[0].payload),
            expected[0],
            "probability, frame {frame}"
        );
        assert_eq!(
            floats(&published[1].payload),
            expected[1],
            "state, frame {frame}"
        );
        state = expected[1].clone();
    }
}

#[test]
fn a_tensor_of_the_wrong_size_is_an_error_the_plugin_sees_not_a_crash() {
    let mut w = worker("onnx-runner", &[("inputs", "features:1x9")]);
    let err = w
        .handle(&message("onnx/in", le_bytes(&[0.0; 9])))
        .expect_err("shape refused");
    assert!(err.to_string().contains("running model `model`"), "{err}");
    // The instance lives on and the right shape still works.
    let mut ok = worker("onnx-runner", &[]);
    assert!(ok.handle(&message("onnx/in", le_bytes(&[0.0; 8]))).is_ok());
    assert_eq!(w.stats().traps, 0);
}

#[test]
fn i64_tensors_cross_the_backend_both_ways() {
    use edgewise_host::capability::nn::tract::TractModel;
    use wasmtime_wasi_nn::backend::NamedTensor;
    use wasmtime_wasi_nn::wit::TensorType;

    let path = edgewise_tests::repo().join("tests/models/double_i64.onnx");
    let spec = edgewise_signing::ModelSpec {
        name: "double".into(),
        encoding: "onnx".into(),
        file: path.clone(),
        inputs: [("ids".to_owned(), vec![1, 4])].into(),
    };
    let model = TractModel::optimise(std::fs::read(&path).expect("model file"), &spec)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let ids: [i64; 4] = [-3, 0, 7, 1 << 40];
    let input = NamedTensor {
        name: "ids".into(),
        tensor: wasmtime_wasi_nn::Tensor::new(
            vec![1, 4],
            TensorType::I64,
            ids.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    };
    let outputs = model.run(vec![input]).unwrap_or_else(|e| panic!("{e:#}"));
    let names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["doubled", "as_float"]);
    let doubled: Vec<i64> = outputs[0]
        .tensor
        .data
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    assert_eq!(outputs[0].tensor.ty, TensorType::I64);
    assert_eq!(doubled, [-6, 0, 14, 1 << 41]);
    assert_eq!(outputs[1].tensor.ty, TensorType::Fp32);
    assert_eq!(
        floats(&outputs[1].tensor.data),
        [-3.0, 0.0, 7.0, (1u64 << 40) as f32]
    );

    // The wrong element type is named, not crashed on.
    let wrong = NamedTensor {
        name: "ids".into(),
        tensor: wasmtime_wasi_nn::Tensor::new(vec![1, 4], TensorType::Fp32, vec![0; 16]),
    };
    let err = model
        .run(vec![wrong])
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("input `ids` must be I64"), "{err}");
}

#[test]
fn a_model_that_did_not_change_is_shared_by_the_next_version_not_loaded_again() {
    let load =
        |dir: &std::path::Path| edgewise_tests::load(dir, &[]).unwrap_or_else(|e| panic!("{e}"));
    let v1 = load(&edgewise_tests::plugin_dir("vibration-fault"));
    let next = copy_plugin("vibration-fault");
    edit(next.path(), "plugin.toml", "release = 1", "release = 2");
    let v2 = load(next.path());
    assert!(
        v1.shares_model_with(&v2, "vibration"),
        "same file, same shapes: one graph"
    );
    // Other declared shapes are another optimisation of the file: loaded on their own.
    let reshaped = copy_plugin("vibration-fault");
    edit(
        reshaped.path(),
        "plugin.toml",
        "inputs = { features = [1, 8] }\n",
        "",
    );
    let v3 = load(reshaped.path());
    assert!(!v1.shares_model_with(&v3, "vibration"));
}
