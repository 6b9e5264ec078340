#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| magma_dnn_fuzz::idx(data));
