//! Fuzzes the front end: any bytes must give a module or a diagnostic, never a panic,
//! a stack overflow or a hang. `compile_bytes` covers UTF-8 decoding, parsing and
//! elaboration; rendering the report exercises the span arithmetic of diagnostics.

#![no_main]

use fnet::driver::compile_bytes;
use fnet::eval::Options;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(report) = compile_bytes("fuzz.fnet", data, &Options::default()) {
        let _ = report.render();
    }
});
