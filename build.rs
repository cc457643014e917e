//! Relinks the release binary when the hot-function list changes: the
//! Makefile links it through `tools/hot/cc-hot`, which reads the list, and
//! cargo does not otherwise know the link depends on it.
fn main() {
    println!("cargo:rerun-if-changed=tools/hot/functions.txt");
}
