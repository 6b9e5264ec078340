#![no_main]
// Odd first byte: the rest as the whole file (what corruption produces: stopped by the
// checksum); even: the rest behind a valid integrity header (HDF5 and the schema checks).
// MAGMA_FUZZ_MODE=raw: every input as the whole file.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&mode, rest)) if mode & 1 == 0 && !magma_dnn_fuzz::raw_only() => {
            magma_dnn_fuzz::hdf5_dataset(&magma_dnn_fuzz::sealed(rest))
        }
        Some((_, rest)) => magma_dnn_fuzz::hdf5_dataset(rest),
        None => {}
    }
});
