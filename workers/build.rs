//! See `shared/build/relr.rs`.

#[path = "../shared/build/relr.rs"]
mod relr;

fn main() {
    relr::link_packed_relocations();
}
