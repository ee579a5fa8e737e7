//! Every integration test, as one test binary: each file of tests/ is a module (Cargo.toml's
//! `autotests = false`). One binary compiles the shared harness (`common`) once and links matrix-sdk
//! and the AWS SDKs once, where fourteen binaries cost CI minutes. Filter by file with its module
//! name: `cargo test --test integration s3::`.

mod common;

mod abuse;
mod assumed_role;
mod bad_input;
mod committing;
mod container;
mod create_only;
mod data_keys;
mod deploy;
mod doc_examples;
mod docs;
mod export;
mod faults;
mod house;
mod identity;
mod insider;
mod manifest;
mod matrix;
mod matrix_capture;
mod object_lock;
mod openapi;
mod period_keys;
mod pipeline;
mod reporting;
mod s3;
mod sqs;
mod stacks;
mod storage;
mod verify_s3;
