//! Test harness: runs the real `retention-bot` binary on a free loopback port with its own
//! directories, and reads back what it wrote.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod archive;
pub mod attacks;
pub mod aws;
pub mod bot;
pub mod faults;
pub mod lagging_front;
pub mod synapse;
pub mod terminal;

// Re-exported so tests name them `common::Bot` etc.; a test binary that uses none of one file's
// helpers would otherwise warn.
#[allow(unused_imports)]
pub use {archive::*, bot::*, terminal::*};
