//! The safetensors loader: `candle_core::safetensors::load_buffer` (the in-memory parser) and
//! `mosaic_models::params::Checkpoint::read` (the memory-mapped file path every model load goes through, with
//! its conversion of half-precision tensors to f32).
//!
//! Input: the file's bytes.

#![no_main]

use candle_core::Device;
use libfuzzer_sys::fuzz_target;
use mosaic_models::params::Checkpoint;

fuzz_target!(|data: &[u8]| {
    let device = Device::Cpu;
    let in_memory = candle_core::safetensors::load_buffer(data, &device);
    let path = mosaic_fuzz::scratch_file("model.safetensors", data);
    let from_file = Checkpoint::read(&path, &device);
    // Both read the same bytes: they must agree on which tensors the file holds.
    if let (Ok(tensors), Ok(checkpoint)) = (&in_memory, &from_file) {
        let mut names: Vec<&String> = tensors.keys().collect();
        let mut read: Vec<&String> = checkpoint.tensors.keys().collect();
        names.sort();
        read.sort();
        assert_eq!(names, read);
        for (name, tensor) in tensors {
            assert_eq!(
                tensor.dims(),
                checkpoint.tensors[name].dims(),
                "tensor {name}"
            );
        }
    }
});
