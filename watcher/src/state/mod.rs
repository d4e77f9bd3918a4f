//! What the daemon remembers: the listener table and its lifecycle.
pub mod lifecycle;
pub mod tracker;
