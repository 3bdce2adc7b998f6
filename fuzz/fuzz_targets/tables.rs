//! The text table readers: AIF / time tables (1-4 columns), value lists
//! (FSL .bval) and ASL-BIDS aslcontext.tsv.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|text: &str| {
    let p = Path::new("fuzz.txt");
    for columns in 1..=4 {
        let _ = osipy_io::parse_numbers(text, p, columns);
    }
    let _ = osipy_io::parse_value_list(text, p);
    let _ = osipy_asl::context::parse_aslcontext(text, "fuzz.tsv");
});
