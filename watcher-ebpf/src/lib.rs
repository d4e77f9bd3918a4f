//! Exists so that watcher can name this crate as a build-dependency
//! (cargo then rebuilds watcher when it changes); the programs are the binary.
#![no_std]
