//! Prints the ABI description of this build of pv-abi (see
//! `pv_abi::layout::describe`). `cargo xtask abi-check` runs it with the
//! `abi-1-0` feature to prove that a 1.0 build describes exactly the
//! recorded ABI 1.0.

fn main() {
    let mut out = String::new();
    pv_abi::layout::describe(&mut out).expect("writing to a String cannot fail");
    print!("{out}");
}
